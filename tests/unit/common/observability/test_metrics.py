"""The mechanism metrics: consumer lag from librdkafka statistics, batch counting."""

from __future__ import annotations

import importlib.metadata
import json
import platform
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from services.common.observability import metrics
from services.common.observability.build import package_version

pytestmark = pytest.mark.unit


@pytest.fixture
def recording() -> Iterator[None]:
    yield
    metrics.set_recording(True)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


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


def test_build_info_names_the_version_service_and_python() -> None:
    metrics.announce_build("order")
    labels = {"version": package_version(), "service": "order", "python": platform.python_version()}
    assert REGISTRY.get_sample_value("paysaga_build_info", labels) == 1
    assert package_version() == importlib.metadata.version("paysaga")


def test_size_histograms_carry_their_unit(recording: None) -> None:
    before = REGISTRY.get_sample_value("paysaga_batch_size_events_sum") or 0
    metrics.consumed(["orders", "orders", "payments"])
    assert REGISTRY.get_sample_value("paysaga_batch_size_events_sum") == before + 3
    before = REGISTRY.get_sample_value("paysaga_group_commit_size_requests_sum") or 0
    metrics.group_committed(4)
    assert REGISTRY.get_sample_value("paysaga_group_commit_size_requests_sum") == before + 4
