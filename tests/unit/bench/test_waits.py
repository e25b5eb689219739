"""bench.waits: a phase's means from the services' metrics, over the phase's window only."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest, start_http_server

from bench.report import table
from bench.stack import free_port
from bench.waits import WaitMeter, describe, means, parse


class Service:
    """The four histograms bench.waits reads, named and labelled as the services' are."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.hops = Histogram("paysaga_hop_duration_seconds", "", ["topic"], registry=self.registry)
        self.handling = Histogram(
            "grpc_server_handling_seconds",
            "",
            ["grpc_service", "grpc_method", "grpc_type"],
            registry=self.registry,
        )
        self.batches = Histogram("paysaga_batch_size_events", "", registry=self.registry)
        self.groups = Histogram("paysaga_group_commit_size_requests", "", registry=self.registry)

    def call(self, method: str, seconds: float) -> None:
        self.handling.labels("paysaga.v1.OrderService", method, "unary").observe(seconds)

    def text(self) -> str:
        return generate_latest(self.registry).decode()


def test_means_cover_only_what_was_observed_between_the_readings() -> None:
    service = Service()
    service.hops.labels("orders").observe(1.0)  # before the window: left out
    service.call("CreateOrder", 1.0)
    service.batches.observe(100)
    before = parse(service.text())
    service.hops.labels("orders").observe(0.010)
    service.hops.labels("orders").observe(0.030)
    service.hops.labels("payments").observe(0.005)
    service.call("CreateOrder", 0.004)
    service.call("GetOrder", 9.0)  # another method: not CreateOrder's handling
    service.batches.observe(2)
    service.batches.observe(4)
    result = means(before, parse(service.text()))
    assert result["hop_mean_ms"] == {"orders": 20.0, "payments": 5.0}
    assert result["create_handling_mean_ms"] == 4.0
    assert result["batch_mean_records"] == 3.0
    assert result["group_commit_mean_creates"] is None  # none in the window


def test_describe_names_every_mean() -> None:
    line = describe(
        {
            "hop_mean_ms": {"orders": 20.0},
            "create_handling_mean_ms": 4.0,
            "batch_mean_records": 3.0,
            "group_commit_mean_creates": 2.5,
            "unread": ["payment-0-api"],
        }
    )
    assert line == (
        "CreateOrder 4.0 ms; hops orders 20.0 ms; 3.0 records a consumed batch, "
        "2.5 creates a group commit (unread: payment-0-api)"
    )
    assert describe(None) == "n/a (no service metrics)"


@pytest.fixture
def served() -> Iterator[tuple[Service, str]]:
    service = Service()
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=service.registry)
    try:
        yield service, f"127.0.0.1:{port}"
    finally:
        server.shutdown()
        thread.join(5)


def test_the_meter_sums_the_processes_it_read_at_both_ends(served: tuple[Service, str]) -> None:
    service, address = served
    silent = f"127.0.0.1:{free_port()}"  # nobody listens: left out, and named
    meter = WaitMeter(
        {"order-0-worker": address, "order-0-api": silent, "payment-0-api": "0"}, timeout_s=1
    )
    service.hops.labels("transactions").observe(0.5)  # before start(): not in the window
    meter.start()
    service.hops.labels("transactions").observe(0.002)
    service.groups.observe(6)
    result = meter.stop()
    assert result is not None
    assert result["hop_mean_ms"] == {"transactions": 2.0}
    assert result["group_commit_mean_creates"] == 6.0
    assert result["unread"] == ["order-0-api"]  # "0": metrics off, not a process to read


def test_a_stack_without_metrics_gives_none() -> None:
    meter = WaitMeter({"order-0-api": "0"})
    meter.start()
    assert meter.stop() is None


def test_a_process_that_answers_garbage_is_left_out() -> None:
    """Not a metrics endpoint (here, a plain TCP server that hangs up): named, not fatal."""
    listener = socket.create_server(("127.0.0.1", 0))
    address = f"127.0.0.1:{listener.getsockname()[1]}"

    def hang_up() -> None:
        for _ in range(2):
            connection, _ = listener.accept()
            connection.sendall(b"not http\r\n\r\n")
            connection.close()

    thread = threading.Thread(target=hang_up, daemon=True)
    thread.start()
    meter = WaitMeter({"order-0-api": address}, timeout_s=1)
    meter.start()
    result = meter.stop()
    thread.join(5)
    listener.close()
    assert result is not None and result["unread"] == ["order-0-api"]


def test_the_report_prints_the_waits_of_results_that_have_them() -> None:
    """A saved run with the means prints a row per saga phase; one from before prints none."""
    results = Path(__file__).resolve().parents[3] / "bench" / "results"
    with_waits = json.loads((results / "2026-12-06T184523Z-b0d2cff.json").read_text())
    rows = [line for line in table(with_waits).splitlines() if "where orders waited" in line]
    assert len(rows) == 3  # throughput, light, latency
    assert "hops orders 4.1 ms, payments 2.4 ms, transactions 2.1 ms" in rows[1]
    before = json.loads((results / "2026-12-06T162900Z-eac7faf.json").read_text())
    assert "where orders waited" not in table(before)
