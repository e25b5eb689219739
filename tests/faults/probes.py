"""Probes of a running stack for the unhappy-path tests: health, raw records, one order's money."""

from __future__ import annotations

import uuid

import grpc
from confluent_kafka import KafkaError, Message, Producer
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paysaga.v1 import orders_pb2, payments_pb2
from paysaga.v1.orders_pb2_grpc import OrderServiceStub
from paysaga.v1.payments_pb2_grpc import PaymentServiceStub
from services.common.headers import Headers
from tests.faults.invariants import TerminalWatch, check, query, settled
from tests.faults.load import LoadGenerator
from tests.faults.scenario import SETTLE_S, assert_holds
from tests.faults.stack import FaultStack
from tests.support import end_offsets, wait_for


def health(address: str, name: str) -> int:
    """The status a service's health server reports for `name` ("" = the service)."""
    with grpc.insecure_channel(address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=name), timeout=5
        )
    return reply.status


def produce(bootstrap: str, records: list[tuple[str, bytes, bytes, Headers]]) -> None:
    """Write (topic, key, value, headers) records as any client could, up to ~1 MB each."""
    errors: list[str] = []

    def delivered(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(f"{msg.topic()}: {err}")

    producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 1_048_576})
    for topic, key, value, headers in records:
        producer.produce(topic, key=key, value=value, headers=headers, on_delivery=delivered)
        producer.poll(0)
    assert producer.flush(30) == 0, "records not delivered within 30 s"
    assert not errors, f"records refused: {errors}"


def place(orders_api: OrderServiceStub, user_id: int, product_id: int = 1) -> orders_pb2.Order:
    request = orders_pb2.CreateOrderRequest(
        user_id=user_id, product_id=product_id, request_id=str(uuid.uuid4())
    )
    return orders_api.CreateOrder(request, timeout=10).order


def balance(payments_api: PaymentServiceStub, user_id: int) -> int:
    request = payments_pb2.GetBalanceRequest(user_id=user_id)
    return payments_api.GetBalance(request, timeout=10).balance_cents


def kinds(payments_api: PaymentServiceStub, order_id: str) -> list[int]:
    """The kinds of the transactions recorded for an order, CHARGE first."""
    request = payments_pb2.ListTransactionsRequest(order_id=order_id, page_size=10)
    reply = payments_api.ListTransactions(request, timeout=10)
    return sorted(t.kind for t in reply.transactions)


def payment_row(stack: FaultStack, order_id: str) -> tuple[object, ...] | None:
    """(approved, refunded_at, reason) of the order's payment decision, if made."""
    rows = query(
        stack.payment_url,
        "SELECT approved, refunded_at, reason FROM payment WHERE order_id = :id",
        {"id": order_id},
    )
    return rows[0] if rows else None


def wait_consumed(stack: FaultStack, service: str, topic: str, timeout_s: float = 30.0) -> None:
    """Wait until `service`'s group has committed everything on `topic` written so far."""
    ends = end_offsets(stack.bootstrap, [topic])

    def done() -> bool:
        committed = stack.committed(service)
        return all(committed.get(tp, -1) >= end for tp, end in ends.items() if end > stack.base[tp])

    wait_for(f"{service} to consume {topic} to its end", done, timeout_s, 0.2)


def stored_kinds(stack: FaultStack, order_id: str) -> list[str]:
    """The kinds of the order's transactions, read from the Payment database (CHARGE first)."""
    rows = query(
        stack.payment_url, 'SELECT kind FROM "transaction" WHERE order_id = :id', {"id": order_id}
    )
    return sorted(str(row[0]) for row in rows)


def stored_status(stack: FaultStack, order_id: str) -> str:
    return str(
        query(stack.order_url, "SELECT status FROM orders WHERE id = :id", {"id": order_id})[0][0]
    )


def wait_refund_noted(orders_api: OrderServiceStub, order_id: str) -> orders_pb2.Order:
    """The FAILED order once its reason names the refund of its charge."""

    def probe() -> orders_pb2.Order | None:
        order = orders_api.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id)).order
        return order if "; refunded " in order.failure_reason else None

    return wait_for(f"the refund of order {order_id} to be noted", probe, 60, 0.2)


def assert_saga_holds(stack: FaultStack, start: dict[int, int], ids: set[str]) -> None:
    """Every invariant of the fault suite, over the orders placed by hand (`ids`)."""
    outcome = settled(
        lambda: check(
            order_url=stack.order_url,
            payment_url=stack.payment_url,
            load=LoadGenerator(stack.order_address),  # never started: no load here
            start_balances=start,
            watch=TerminalWatch(stack.order_url),  # polled once, after the orders settled
            extra_accepted=ids,
        ),
        SETTLE_S,
    )
    assert_holds(outcome, stack)
