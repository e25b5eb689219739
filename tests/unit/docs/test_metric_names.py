"""The metric names of docs/observability.md against the code, both ways: they are a contract
(the dashboard and alerts use them), so a metric is neither added nor renamed unseen."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector

from tests.doc_blocks import ROOT

PAGE = ROOT / "docs" / "observability.md"
#: prometheus-client's metric types and metric families: their first argument is the name.
_METRIC_CALLS = re.compile(r"(Counter|Gauge|Histogram|Summary|Info|Enum|\w+MetricFamily)")
_OURS = re.compile(r"(paysaga|grpc_server|process)_\w+")


def defined_in_code() -> dict[str, str]:
    """Metric name -> the file that defines it, for every metric created under services/."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "services").rglob("*.py")):
        for name in _metric_names(ast.parse(path.read_text())):
            found.setdefault(name, str(path.relative_to(ROOT)))
    return found


def _metric_names(tree: ast.Module) -> Iterator[str]:
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and node.args):
            continue
        func = node.func
        called = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        first = node.args[0]
        if (
            _METRIC_CALLS.fullmatch(called)
            and isinstance(first, ast.Constant)
            and isinstance(first.value, str)
            and _OURS.fullmatch(first.value)
        ):
            yield first.value


def process_collector_names() -> set[str]:
    """What prometheus-client's process collector reports (process_cpu_seconds_total, ...)."""
    collector = ProcessCollector(registry=CollectorRegistry())
    names = set()
    for family in collector.collect():
        suffix = "_total" if family.type == "counter" else ""
        names.add(family.name + suffix)
    return names


def documented() -> set[str]:
    """The names in the first column of the page's `| metric |` table."""
    names: set[str] = set()
    in_table = False
    for line in PAGE.read_text().splitlines():
        if not line.startswith("|"):
            in_table = False
            continue
        first = line.split("|")[1].strip()
        if first == "metric":
            in_table = True
        elif in_table:
            names |= set(re.findall(r"`(\w+)`", first))
    return names


def test_metrics_are_found_in_the_code() -> None:
    found = defined_in_code()
    assert {"paysaga_orders_total", "paysaga_hop_duration_seconds"} <= set(found)
    assert {"paysaga_outbox_pending", "process_threads"} <= set(found)


def test_every_metric_is_documented() -> None:
    missing = sorted(
        f"{n} ({path})" for n, path in defined_in_code().items() if n not in documented()
    )
    assert not missing, f"add these to the metrics table of docs/observability.md: {missing}"


def test_every_documented_metric_exists() -> None:
    known = set(defined_in_code()) | process_collector_names()
    unknown = sorted(documented() - known)
    assert not unknown, f"docs/observability.md lists metrics nothing defines: {unknown}"
