"""The metrics endpoint: its address, switching it off, serving, a taken port."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from services.common.observability import metrics, metrics_endpoint

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
    assert metrics_endpoint.parse_address(address) == parsed


def test_a_bad_address_says_what_to_write() -> None:
    with pytest.raises(ValueError, match="host:port"):
        metrics_endpoint.parse_address("localhost")


def test_nothing_is_recorded_with_metrics_off(recording: None) -> None:
    consumed = sample("paysaga_events_consumed_total", topic="orders")
    assert metrics_endpoint.serve("0") is None
    metrics.consumed(["orders", "orders"])
    assert sample("paysaga_events_consumed_total", topic="orders") == consumed
    assert metrics.consumer_stats_config() == {}


def test_the_endpoint_serves_every_metric_and_refuses_a_taken_port(recording: None) -> None:
    server = metrics_endpoint.serve("127.0.0.1:0")
    assert server is not None
    try:
        metrics.consumed(["transactions"] * 3)
        with urllib.request.urlopen(f"http://{server.address}/metrics", timeout=5) as reply:
            text = reply.read().decode()
        assert 'paysaga_events_consumed_total{topic="transactions"}' in text
        assert "process_threads" in text and "process_open_fds" in text
        with pytest.raises(metrics_endpoint.MetricsAddressInUse, match="ORDER_METRICS_ADDRESS"):
            metrics_endpoint.serve(server.address, "ORDER_METRICS_ADDRESS")
    finally:
        server.stop()
