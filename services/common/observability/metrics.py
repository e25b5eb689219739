"""The metrics of the shared mechanisms, and what a service process reports when scraped.

The names are a contract (dashboards, alerts): see docs/observability.md. The services
define their own domain metrics next to their code (services/order/metrics.py,
services/payment/metrics.py); the endpoint that serves them all is `metrics_endpoint`.
Metrics live in prometheus-client's default registry, one per process, next to its
process collector (CPU, memory, open fds, start time) and our `process_threads`.

Hot-path cost: counters are incremented once per batch or group (`inc(n)`), never per
event, and a value that needs the database (the outbox backlog) or Kafka (consumer lag)
is read only when Prometheus scrapes, or from librdkafka's own statistics callback
(every STATS_INTERVAL_MS on the consumer thread): nothing is queried per event. The one
per-event cost is the hop histogram (one `observe`, a bucket search under a lock).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.common.observability.build import package_version, python_version

log = logging.getLogger(__name__)

#: Saga and hop latencies: a few ms (an idle stack) up to the saga deadline and beyond.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
#: Batch and group sizes: 1 up to the default consumer batch (500) and relay batch (1000).
SIZE_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)
#: gRPC handling time: sub-millisecond reads up to slow writes.
RPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

HOP_DURATION = Histogram(
    "paysaga_hop_duration_seconds",
    "Time from an event's creation (ce_time, in its producer's transaction) to its "
    "application by this consumer: outbox wait + relay + Kafka + consumer, by topic.",
    ["topic"],
    buckets=LATENCY_BUCKETS,
)
EVENTS_CONSUMED = Counter(
    "paysaga_events_consumed_total",
    "Records consumed and settled (applied, dead-lettered or skipped as duplicates), by topic.",
    ["topic"],
)
EVENTS_PUBLISHED = Counter(
    "paysaga_events_published_total",
    "Outbox records the broker confirmed, by topic (dead-letter topics included).",
    ["topic"],
)
DEAD_LETTERS = Counter(
    "paysaga_dead_letters_total",
    "Dead letters published, by the topic the poisoned record came from.",
    ["topic"],
)
DUPLICATES_SKIPPED = Counter(
    "paysaga_duplicates_skipped_total",
    "Records whose event id was already in the inbox (redeliveries, replays), by topic.",
    ["topic"],
)
BATCH_SIZE = Histogram(
    "paysaga_batch_size_events",
    "Records per consumed batch (one database transaction each).",
    buckets=SIZE_BUCKETS,
)
GROUP_COMMIT_SIZE = Histogram(
    "paysaga_group_commit_size_requests",
    "CreateOrder writes per group commit (one transaction and one fsync each).",
    buckets=SIZE_BUCKETS,
)
BUILD_INFO = Gauge(
    "paysaga_build_info",
    "Always 1: which paysaga version and Python this service process runs "
    "(join on it: `* on (instance) group_left(version) paysaga_build_info`).",
    ["version", "service", "python"],
)
GRPC_STARTED = Counter(
    "grpc_server_started_total",
    "RPCs started on the server.",
    ["grpc_service", "grpc_method", "grpc_type"],
)
GRPC_HANDLED = Counter(
    "grpc_server_handled_total",
    "RPCs completed on the server, by status code.",
    ["grpc_service", "grpc_method", "grpc_type", "grpc_code"],
)
GRPC_HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end (a stream: its whole life), by method.",
    ["grpc_service", "grpc_method", "grpc_type"],
    buckets=RPC_BUCKETS,
)

#: librdkafka's statistics interval for the consumers (it feeds paysaga_consumer_lag).
STATS_INTERVAL_MS = 5000


# -- recording helpers (one call per batch / group / commit) -------------------------------

#: Whether the helpers below (and the services' own metrics) record anything. A process
#: whose metrics address is off records nothing (`metrics_endpoint.serve`), so
#: `make bench` can compare the cost with metrics on and off.
_recording = True


def recording() -> bool:
    """Whether metrics are recorded in this process (the metrics endpoint is on)."""
    return _recording


def set_recording(on: bool) -> None:
    global _recording
    _recording = on


def announce_build(service: str) -> None:
    """paysaga_build_info{version, service, python} = 1 for this process (once, at start)."""
    BUILD_INFO.labels(package_version(), service, python_version()).set(1)


def group_committed(size: int) -> None:
    """A CreateOrder group commit of `size` writes."""
    if _recording:
        GROUP_COMMIT_SIZE.observe(size)


def duplicate_skipped(topic: str) -> None:
    """One record dropped by the inbox (rare: redeliveries, replays)."""
    if _recording:
        DUPLICATES_SKIPPED.labels(topic).inc()


def _inc(counter: Counter, counts: Mapping[str, int]) -> None:
    for label, n in counts.items():
        counter.labels(label).inc(n)


def observe_hops(topic: str, event_times: Iterable[str]) -> None:
    """Observe the hop latency of events applied now, from their ce_time (ISO 8601)."""
    if not _recording:
        return
    now = time.time()
    histogram = HOP_DURATION.labels(topic)
    for stamp in event_times:
        try:
            created = datetime.fromisoformat(stamp).timestamp()
        except ValueError:
            continue  # no usable ce_time: nothing to measure
        histogram.observe(max(0.0, now - created))


def consumed(topics: Iterable[str]) -> None:
    """A batch was settled: its size, and its records by topic."""
    if not _recording:
        return
    tally = Tally(topics)
    BATCH_SIZE.observe(sum(tally.values()))
    _inc(EVENTS_CONSUMED, tally)


def published(topics: Iterable[str]) -> None:
    """The broker confirmed records on these topics (one entry per record)."""
    if not _recording:
        return
    tally = Tally(topics)
    _inc(EVENTS_PUBLISHED, tally)
    _inc(DEAD_LETTERS, {t.removesuffix(".dlt"): n for t, n in tally.items() if t.endswith(".dlt")})


# -- values read at scrape time -----------------------------------------------------------


class OutboxBacklog(Collector):
    """paysaga_outbox_pending and paysaga_outbox_oldest_age_seconds, read when scraped.

    `read` returns (unpublished rows, creation time of the oldest or None); on PostgreSQL
    every replica sees the same shared outbox, so dashboards take max() over replicas.
    """

    def __init__(self, read: Callable[[], tuple[int, datetime | None]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            pending, oldest = self.read()
        except Exception:
            log.warning("outbox backlog not readable for metrics", exc_info=True)
            return
        age = 0.0
        if oldest is not None:
            if oldest.tzinfo is None:
                oldest = oldest.replace(tzinfo=UTC)
            age = max(0.0, (datetime.now(UTC) - oldest).total_seconds())
        yield GaugeMetricFamily(
            "paysaga_outbox_pending", "Outbox records not published yet.", value=pending
        )
        yield GaugeMetricFamily(
            "paysaga_outbox_oldest_age_seconds",
            "Age of the oldest unpublished outbox record (0 when there is none).",
            value=age,
        )


class ConsumerLag(Collector):
    """paysaga_consumer_lag{topic,partition}: from librdkafka's statistics (`on_stats`).

    librdkafka computes each partition's consumer_lag (high watermark − committed
    offset) on the consumer's own thread every STATS_INTERVAL_MS. Each client's latest
    snapshot replaces its previous one whole, so a partition that moved to another replica
    drops out; a client that sent nothing for 3 intervals (closed, replaced) drops out
    too. Partitions never committed (lag -1: the Order service's order-updates reader,
    which commits nothing) or not assigned are left out.
    """

    def __init__(self) -> None:
        #: client name -> (monotonic time of its snapshot, lag per (topic, partition)).
        self._clients: dict[str, tuple[float, dict[tuple[str, str], int]]] = {}

    def on_stats(self, stats_json: str) -> None:
        """confluent-kafka's `stats_cb`."""
        try:
            stats = json.loads(stats_json)
        except ValueError:
            return
        if stats.get("type") != "consumer":
            return
        lags: dict[tuple[str, str], int] = {}
        for topic, data in (stats.get("topics") or {}).items():
            for partition, part in (data.get("partitions") or {}).items():
                lag = part.get("consumer_lag", -1)
                if partition == "-1" or lag < 0 or part.get("fetch_state") == "none":
                    continue
                lags[(topic, partition)] = lag
        self._clients[str(stats.get("name", ""))] = (time.monotonic(), lags)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "paysaga_consumer_lag",
            "Records on a partition not yet committed by this consumer (high watermark − "
            "committed offset), per assigned partition.",
            labels=["topic", "partition"],
        )
        fresh_after = time.monotonic() - 3 * STATS_INTERVAL_MS / 1000
        lags: dict[tuple[str, str], int] = {}
        for seen, client_lags in list(self._clients.values()):
            if seen >= fresh_after:
                lags.update(client_lags)
        for (topic, partition), lag in sorted(lags.items()):
            family.add_metric([topic, partition], lag)
        yield family


class ProcessThreads(Collector):
    """process_threads: the OS threads of this process (librdkafka's and gRPC's included)."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            with open("/proc/self/stat", "rb") as stat:
                threads = int(stat.read().rsplit(b")", 1)[1].split()[17])
        except (OSError, IndexError, ValueError):
            threads = threading.active_count()
        yield GaugeMetricFamily("process_threads", "Threads of this process.", value=threads)


CONSUMER_LAG = ConsumerLag()
REGISTRY.register(CONSUMER_LAG)
REGISTRY.register(ProcessThreads())

_outbox_collector: OutboxBacklog | None = None


def watch_outbox(read: Callable[[], tuple[int, datetime | None]]) -> None:
    """Serve the outbox backlog read by `read` (one per process; a new one replaces it)."""
    global _outbox_collector
    if _outbox_collector is not None:
        REGISTRY.unregister(_outbox_collector)
    _outbox_collector = OutboxBacklog(read)
    REGISTRY.register(_outbox_collector)


def consumer_stats_config() -> dict[str, Any]:
    """What a consumer's config needs for paysaga_consumer_lag (see ConsumerLag)."""
    if not recording():
        return {}
    return {"statistics.interval.ms": STATS_INTERVAL_MS, "stats_cb": CONSUMER_LAG.on_stats}
