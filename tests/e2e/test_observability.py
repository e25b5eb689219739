"""Metrics and traces of the real services, each in its own process, on a private stack.

Tracing is exported over OTLP/gRPC to a collector this test runs (opentelemetry-proto's
TraceService); both /metrics endpoints are scraped on free ports.
"""

from __future__ import annotations

import json
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from confluent_kafka import Message, Producer
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.trace.v1 import trace_pb2
from prometheus_client.parser import text_string_to_metric_families

from deploy.stack.stack import Stack
from paysaga.v1 import orders_pb2, orders_pb2_grpc
from services.common.headers import header_dict
from tests.e2e.conftest import GrpcurlStack, running
from tests.support import free_port, read_topic, wait_for, wait_terminal

pytestmark = pytest.mark.e2e

SERVER = trace_pb2.Span.SPAN_KIND_SERVER
CONSUMER = trace_pb2.Span.SPAN_KIND_CONSUMER
PRODUCER = trace_pb2.Span.SPAN_KIND_PRODUCER


@dataclass(frozen=True)
class ExportedSpan:
    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, object]


@dataclass
class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP trace collector: keeps every span it is sent."""

    spans: list[ExportedSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def Export(
        self, request: trace_service_pb2.ExportTraceServiceRequest, context: grpc.ServicerContext
    ) -> trace_service_pb2.ExportTraceServiceResponse:
        found = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        ExportedSpan(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={
                                a.key: a.value.string_value or a.value.int_value
                                for a in span.attributes
                            },
                        )
                    )
        with self.lock:
            self.spans.extend(found)
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_order(self, order_id: str) -> list[ExportedSpan]:
        with self.lock:
            return [s for s in self.spans if s.attributes.get("paysaga.order_id") == order_id]

    def of_trace(self, trace_id: str) -> list[ExportedSpan]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


@dataclass
class Observed:
    stack: GrpcurlStack
    collector: Collector

    @property
    def services(self) -> Stack:
        return self.stack.stack

    def orders(self) -> orders_pb2_grpc.OrderServiceStub:
        return orders_pb2_grpc.OrderServiceStub(grpc.insecure_channel(self.services.order_address))

    def scrape(self, name: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of one service's /metrics: (name, sorted labels) -> value."""
        url = f"http://{self.services.metrics_address(name)}/metrics"
        with urllib.request.urlopen(url, timeout=10) as reply:
            text = reply.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory, grpcurl_binary: str) -> Iterator[Observed]:
    collector = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, server)
    port = server.add_insecure_port(f"127.0.0.1:{free_port()}")
    server.start()
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "ORDER_LOG_LEVEL": "DEBUG",
        "PAYMENT_LOG_LEVEL": "DEBUG",
    }
    home = tmp_path_factory.mktemp("observed")
    try:
        with running(Stack(home, ports="free", env=env, detach=False), grpcurl_binary) as stack:
            yield Observed(stack, collector)
    finally:
        server.stop(None)


def create(stub: orders_pb2_grpc.OrderServiceStub, user_id: int, product_id: int) -> str:
    request = orders_pb2.CreateOrderRequest(
        user_id=user_id, product_id=product_id, request_id=str(uuid.uuid4())
    )
    return str(stub.CreateOrder(request, timeout=10).order.id)


def traceparent_trace_id(record: Message) -> str:
    """The trace id of a record's `traceparent` header (version-traceid-spanid-flags)."""
    return header_dict(record.headers()).get("traceparent", "").split("-")[1]


def log_lines(path: Path, order_id: str) -> list[dict[str, object]]:
    lines = []
    for line in path.read_text().splitlines():
        if line.startswith("{") and order_id in line:
            parsed = json.loads(line)
            if parsed.get("order_id") == order_id:
                lines.append(parsed)
    return lines


def test_one_order_is_one_trace_across_both_services_and_three_topics(observed: Observed) -> None:
    stub = observed.orders()
    order_id = create(stub, user_id=2, product_id=1)
    assert wait_terminal(stub, order_id).status == orders_pb2.ORDER_STATUS_COMPLETED

    def hops() -> dict[str, ExportedSpan] | None:
        found = {
            s.attributes["messaging.destination.name"]: s
            for s in observed.collector.of_order(order_id)
        }
        return found if {"orders", "payments", "transactions"} <= set(found) else None

    by_topic = wait_for("a consumer span on each topic", hops, timeout_s=30)
    trace_id = by_topic["orders"].trace_id
    assert {s.trace_id for s in by_topic.values()} == {trace_id}, "one order, one trace"
    spans = observed.collector.of_trace(trace_id)
    created = [s for s in spans if s.name == "paysaga.v1.OrderService/CreateOrder"]
    assert len(created) == 1, f"one CreateOrder server span in the trace: {spans}"
    root = created[0]
    assert (root.service, root.kind, root.parent_id) == ("paysaga-order", SERVER, "")
    # Parent -> child, hop by hop: CreateOrder -> orders -> payments -> transactions.
    chain = [root, by_topic["orders"], by_topic["payments"], by_topic["transactions"]]
    for parent, child in zip(chain, chain[1:], strict=False):
        assert child.parent_id == parent.span_id, f"{child.name} is a child of {parent.name}"
        assert child.kind == CONSUMER
    assert [s.service for s in chain] == [
        "paysaga-order",
        "paysaga-payment",
        "paysaga-payment",
        "paysaga-order",
    ]
    assert by_topic["orders"].attributes["paysaga.order_id"] == order_id

    # Each event's relay publish: a PRODUCER span, child of the span that created it.
    def publishes() -> dict[str, ExportedSpan] | None:
        found = {
            str(s.attributes["messaging.destination.name"]): s
            for s in observed.collector.of_trace(trace_id)
            if s.kind == PRODUCER
        }
        return found if {"orders", "payments", "transactions"} <= set(found) else None

    published = wait_for("a publish span per topic", publishes, timeout_s=30)
    (group,) = [s for s in observed.collector.of_trace(trace_id) if s.name == "group commit"]
    assert (group.service, group.parent_id) == ("paysaga-order", root.span_id)
    for topic, creator in zip(("orders", "payments", "transactions"), chain, strict=False):
        assert published[topic].parent_id == creator.span_id, f"publish {topic}"
        assert published[topic].name == f"send {topic}"
        assert published[topic].service == creator.service

    # The records of each topic carry the trace context (stored with their outbox rows).
    bootstrap = observed.services.bootstrap
    for topic in ("orders", "payments", "transactions"):
        records = read_topic(
            bootstrap, topic, lambda r: header_dict(r.headers()).get("ce_subject") == order_id
        )
        assert traceparent_trace_id(records[0]) == trace_id, topic

    # Every log line written about the order while handling it names the trace and a span.
    logs = observed.services.log_dir
    lines = log_lines(logs / "order.log", order_id) + log_lines(logs / "payment.log", order_id)
    messages = {line["msg"] for line in lines}
    assert {"order created", "payment decided", "transaction outcome", "order finished"} <= messages
    for line in lines:
        assert line.get("trace_id") == trace_id, line
        assert len(str(line.get("span_id"))) == 16, line


Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_metrics_count_orders_events_dead_letters_and_calls(observed: Observed) -> None:
    stub = observed.orders()

    def outboxes_empty() -> bool:
        return all(
            value(observed.scrape(name), "paysaga_outbox_pending") == 0
            for name in ("order", "payment")
        )

    wait_for("both outboxes published", outboxes_empty, timeout_s=30, interval_s=0.2)
    before = {name: observed.scrape(name) for name in ("order", "payment")}
    completed = [create(stub, user_id=4, product_id=1) for _ in range(2)]
    failed = create(stub, user_id=1, product_id=5)  # 1000.00 > 100.00: declined
    with pytest.raises(grpc.RpcError) as unknown:
        create(stub, user_id=1, product_id=999)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    for order_id in completed:
        assert wait_terminal(stub, order_id).status == orders_pb2.ORDER_STATUS_COMPLETED
    assert wait_terminal(stub, failed).status == orders_pb2.ORDER_STATUS_FAILED

    # A poison record (no CloudEvents headers) and a redelivered OrderPurchased on `orders`.
    bootstrap = observed.services.bootstrap
    purchased = read_topic(
        bootstrap, "orders", lambda r: header_dict(r.headers()).get("ce_subject") == completed[0]
    )[0]
    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce("orders", key=b"1", value=b"not an event", headers=[("x", b"1")])
    producer.produce(
        "orders", key=purchased.key(), value=purchased.value(), headers=purchased.headers()
    )
    assert producer.flush(10) == 0

    def delta(name: str, metric: str, **labels: str) -> float:
        return value(after[name], metric, **labels) - value(before[name], metric, **labels)

    expected = {
        ("order", "paysaga_orders_total", (("status", "created"),)): 3,
        ("order", "paysaga_orders_total", (("status", "completed"),)): 2,
        ("order", "paysaga_orders_total", (("status", "failed"),)): 1,
        ("order", "paysaga_saga_duration_seconds_count", (("outcome", "completed"),)): 2,
        ("order", "paysaga_saga_duration_seconds_count", (("outcome", "failed"),)): 1,
        ("order", "paysaga_hop_duration_seconds_count", (("topic", "transactions"),)): 3,
        ("order", "paysaga_events_consumed_total", (("topic", "transactions"),)): 3,
        # OrderPurchased x3 and the failed order's OrderFailed; OrderUpdated x(3 + 3).
        ("order", "paysaga_events_published_total", (("topic", "orders"),)): 4,
        ("order", "paysaga_events_published_total", (("topic", "order-updates"),)): 6,
        ("payment", "paysaga_payments_total", (("decision", "approved"),)): 2,
        ("payment", "paysaga_payments_total", (("decision", "declined"),)): 1,
        # 4 events of the orders, the poison record and the duplicate.
        ("payment", "paysaga_events_consumed_total", (("topic", "orders"),)): 6,
        ("payment", "paysaga_hop_duration_seconds_count", (("topic", "orders"),)): 4,
        ("payment", "paysaga_duplicates_skipped_total", (("topic", "orders"),)): 1,
        ("payment", "paysaga_dead_letters_total", (("topic", "orders"),)): 1,
        ("payment", "paysaga_events_published_total", (("topic", "orders.dlt"),)): 1,
        ("payment", "paysaga_events_published_total", (("topic", "payments"),)): 3,
        ("payment", "paysaga_events_published_total", (("topic", "transactions"),)): 3,
    }
    after: dict[str, Samples] = {}

    def moved() -> bool:
        after.update({name: observed.scrape(name) for name in ("order", "payment")})
        return all(
            delta(name, metric, **dict(labels)) == n
            for (name, metric, labels), n in expected.items()
        )

    try:
        wait_for("the counters to move", moved, timeout_s=30, interval_s=0.5)
    except AssertionError:
        got = {key: delta(key[0], key[1], **dict(key[2])) for key in expected}
        raise AssertionError(f"expected {expected}\ngot {got}") from None

    create_order = {
        "grpc_service": "paysaga.v1.OrderService",
        "grpc_method": "CreateOrder",
        "grpc_type": "unary",
    }
    assert delta("order", "grpc_server_handled_total", grpc_code="OK", **create_order) == 3
    assert delta("order", "grpc_server_handled_total", grpc_code="NOT_FOUND", **create_order) == 1
    assert delta("order", "grpc_server_handling_seconds_count", **create_order) == 4
    # Every CreateOrder write went through a group commit, the unknown product's too.
    assert delta("order", "paysaga_group_commit_size_requests_sum") == 4
    assert delta("order", "paysaga_batch_size_events_sum") == 3
    assert delta("payment", "paysaga_batch_size_events_sum") == 6 + 3  # orders + payments
    for name in ("order", "payment"):
        samples = after[name]
        for metric in (
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_open_fds",
            "process_threads",
        ):
            assert value(samples, metric) > 0, f"{name}: {metric}"
        assert ("paysaga_outbox_pending", ()) in samples
        assert ("paysaga_outbox_oldest_age_seconds", ()) in samples

    # librdkafka reports the lag every 5 s: both consumers caught up (the Order service's
    # order-updates reader, which commits nothing, must not hide its group's lag).
    def caught_up() -> bool:
        for name, topic in (("payment", "orders"), ("order", "transactions")):
            lags = [
                v
                for (metric, labels), v in observed.scrape(name).items()
                if metric == "paysaga_consumer_lag" and ("topic", topic) in labels
            ]
            if not lags or any(lags):
                return False
        return True

    wait_for("paysaga_consumer_lag at 0 on both services", caught_up, timeout_s=30, interval_s=1)
