"""The metrics module: addresses, consumer lag from librdkafka statistics, batch counting."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from services.common.observability import metrics

pytestmark = pytest.mark.unit


@pytest.fixture
def recording() -> Iterator[None]:
    yield
    metrics.set_recording(True)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("127.0.0.1:9101", ("127.0.0.1", 9101)),
        (":9102", ("0.0.0.0", 9102)),
        ("0", None),
        ("", None),
        (" off ", None),
    ],
)
def test_metrics_address(address: str, parsed: tuple[str, int] | None) -> None:
    assert metrics.parse_address(address) == parsed


def test_a_bad_address_says_what_to_write() -> None:
    with pytest.raises(ValueError, match="host:port"):
        metrics.parse_address("localhost")


def test_consumer_lag_keeps_the_latest_assigned_partitions() -> None:
    lag = metrics.ConsumerLag()

    def stats(partitions: dict[str, dict[str, object]], name: str = "group#consumer-1") -> str:
        topics = {"orders": {"partitions": partitions}}
        return json.dumps({"name": name, "type": "consumer", "topics": topics})

    lag.on_stats(
        stats(
            {
                "0": {"consumer_lag": 3, "fetch_state": "active"},
                "1": {"consumer_lag": -1, "fetch_state": "active"},  # never committed
                "2": {"consumer_lag": 5, "fetch_state": "none"},  # not assigned
                "-1": {"consumer_lag": 0},  # librdkafka's unassigned-partition slot
            }
        )
    )
    (family,) = lag.collect()
    assert [(s.labels, s.value) for s in family.samples] == [
        ({"topic": "orders", "partition": "0"}, 3)
    ]
    lag.on_stats(stats({"4": {"consumer_lag": 0, "fetch_state": "active"}}))
    (family,) = lag.collect()
    assert [s.labels["partition"] for s in family.samples] == ["4"], "partition 0 moved away"
    lag.on_stats("not json")
    lag.on_stats(json.dumps({"type": "producer"}))
    # Another client of the process (the order-updates reader, nothing committed) does
    # not wipe the group consumer's lags.
    lag.on_stats(stats({"0": {"consumer_lag": -1, "fetch_state": "active"}}, "tail#consumer-2"))
    (family,) = lag.collect()
    assert [s.labels["partition"] for s in family.samples] == ["4"]


def test_published_dead_letters_count_under_their_source_topic(recording: None) -> None:
    dead = sample("paysaga_dead_letters_total", topic="payments")
    published = sample("paysaga_events_published_total", topic="payments.dlt")
    metrics.published(["payments.dlt", "transactions", "payments.dlt"])
    assert sample("paysaga_dead_letters_total", topic="payments") - dead == 2
    assert sample("paysaga_events_published_total", topic="payments.dlt") - published == 2


def test_nothing_is_recorded_with_metrics_off(recording: None) -> None:
    consumed = sample("paysaga_events_consumed_total", topic="orders")
    assert metrics.serve("0") is None
    metrics.consumed(["orders", "orders"])
    assert sample("paysaga_events_consumed_total", topic="orders") == consumed
    assert metrics.consumer_stats_config() == {}


def test_the_endpoint_serves_every_metric_and_refuses_a_taken_port(recording: None) -> None:
    server = metrics.serve("127.0.0.1:0")
    assert server is not None
    try:
        metrics.consumed(["transactions"] * 3)
        with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        assert 'paysaga_events_consumed_total{topic="transactions"}' in text
        assert "process_threads" in text and "process_open_fds" in text
        with pytest.raises(metrics.MetricsAddressInUse, match="ORDER_METRICS_ADDRESS"):
            metrics.serve(server.address, "ORDER_METRICS_ADDRESS")
    finally:
        server.stop()
