"""Where an order waited during a phase, from the services' own Prometheus metrics.

A private stack's service processes serve /metrics. Read at the start and at the end of a
phase, their histograms give, for that window alone:

- `hop_mean_ms`, by topic: an event's mean time from its creation (in its producer's
  transaction) to its application by the consumer: the commit, the relay, Kafka and the
  consumer's queue and transaction (`paysaga_hop_duration_seconds`);
- `create_handling_mean_ms`: CreateOrder's mean time in the server, its group commit
  included (`grpc_server_handling_seconds`);
- `batch_mean_records`: records per consumed batch, one transaction each
  (`paysaga_batch_size_events`);
- `group_commit_mean_creates`: CreateOrders per group commit
  (`paysaga_group_commit_size_requests`).

Means, not percentiles: the histograms' buckets are too coarse for a p50 to say more than a
bucket's name. A process that cannot be read is left out and named in `unread`.
"""

from __future__ import annotations

import urllib.request
from collections import defaultdict
from http.client import HTTPException
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

#: (histogram, label that splits it or "", label value kept or "") -> the result's key.
_HISTOGRAMS = {
    ("paysaga_hop_duration_seconds", "topic", ""): "hop_mean_ms",
    ("grpc_server_handling_seconds", "grpc_method", "CreateOrder"): "create_handling_mean_ms",
    ("paysaga_batch_size_events", "", ""): "batch_mean_records",
    ("paysaga_group_commit_size_requests", "", ""): "group_commit_mean_creates",
}
#: Results in milliseconds (the others are counts).
_SECONDS = {"hop_mean_ms", "create_handling_mean_ms"}

#: (result key, part) -> [sum, count]; part is the topic for hops, "" otherwise.
Totals = dict[tuple[str, str], list[float]]


def parse(text: str) -> Totals:
    """The sums and counts of the histograms above in one exposition text."""
    totals: Totals = defaultdict(lambda: [0.0, 0.0])
    for family in text_string_to_metric_families(text):
        for (name, label, wanted), key in _HISTOGRAMS.items():
            if family.name != name:
                continue
            for sample in family.samples:
                part = sample.labels.get(label, "") if label else ""
                if wanted and part != wanted:
                    continue
                slot = 0 if sample.name.endswith("_sum") else 1
                if sample.name.endswith(("_sum", "_count")):
                    totals[(key, "" if wanted else part)][slot] += sample.value
    return totals


def means(before: Totals, after: Totals) -> dict[str, Any]:
    """Each histogram's mean over the window between two readings (None: nothing observed)."""
    result: dict[str, Any] = {"hop_mean_ms": {}}
    for key in _HISTOGRAMS.values():
        if key != "hop_mean_ms":
            result[key] = None
    for (key, part), (total, count) in sorted(after.items()):
        then = before.get((key, part), [0.0, 0.0])
        observed = count - then[1]
        if observed <= 0:
            continue
        mean = (total - then[0]) / observed
        value = round(mean * 1000, 1) if key in _SECONDS else round(mean, 1)
        if key == "hop_mean_ms":
            result[key][part] = value
        else:
            result[key] = value
    return result


class WaitMeter:
    """Reads the services' metrics at start() and stop(); stop() gives the window's means
    over the processes read both times."""

    def __init__(self, addresses: dict[str, str], timeout_s: float = 5.0) -> None:
        #: Process name -> host:port of its /metrics (processes without one are left out).
        self.addresses = {name: a for name, a in addresses.items() if a and a != "0"}
        self.timeout_s = timeout_s
        self._before: dict[str, Totals] = {}

    def start(self) -> None:
        self._before = self._read()

    def stop(self) -> dict[str, Any] | None:
        """The means since start(), or None when no process serves metrics."""
        if not self.addresses:
            return None
        after = self._read()
        both = self._before.keys() & after.keys()
        result = means(_summed(self._before, both), _summed(after, both))
        result["unread"] = sorted(self.addresses.keys() - both)
        return result

    def _read(self) -> dict[str, Totals]:
        """Each process's totals now (a process that does not answer is left out)."""
        read = {}
        for name, address in self.addresses.items():
            try:
                url = f"http://{address}/metrics"
                with urllib.request.urlopen(url, timeout=self.timeout_s) as response:
                    read[name] = parse(response.read().decode())
            except (OSError, HTTPException, ValueError):  # down, garbled: left out, named
                continue
        return read


def _summed(by_process: dict[str, Totals], names: set[str]) -> Totals:
    totals: Totals = defaultdict(lambda: [0.0, 0.0])
    for name in names:
        for part, (total, count) in by_process[name].items():
            totals[part][0] += total
            totals[part][1] += count
    return totals


def describe(waits: dict[str, Any] | None) -> str:
    """One line for the report."""
    if not waits:
        return "n/a (no service metrics)"
    hops = ", ".join(f"{topic} {ms} ms" for topic, ms in waits["hop_mean_ms"].items())
    line = (
        f"CreateOrder {waits['create_handling_mean_ms']} ms; hops {hops or 'none'}; "
        f"{waits['batch_mean_records']} records a consumed batch, "
        f"{waits['group_commit_mean_creates']} creates a group commit"
    )
    if waits.get("unread"):
        line += f" (unread: {', '.join(waits['unread'])})"
    return line
