"""Unhappy paths: records Kafka takes but cannot hand on, a poison the database refuses, a
service frozen past the saga deadline, and clients that retry without an idempotency key.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import grpc
import pytest
from confluent_kafka import Message
from grpc_health.v1 import health_pb2

from deploy.kafka.runtime import KafkaRuntime
from deploy.postgres.runtime import PostgresRuntime
from deploy.stack.processes import ServiceProcess
from paysaga.v1 import events_pb2, orders_pb2, payments_pb2
from services.common.headers import Headers, header_dict
from services.common.messaging.cloudevents import EventMeta
from services.common.timeutil import to_timestamp, utcnow
from services.payment.handlers import LATE_PURCHASE
from services.saga.topics import TOPICS
from tests.faults.invariants import balances, orders, query, set_balances
from tests.faults.probes import (
    assert_saga_holds,
    balance,
    health,
    kinds,
    payment_row,
    place,
    produce,
    stored_kinds,
    stored_status,
    wait_consumed,
    wait_refund_noted,
)
from tests.faults.scenario import FUNDED, Scenario, assert_holds
from tests.faults.stack import FaultStack
from tests.support import read_topic, wait_for, wait_terminal

pytestmark = pytest.mark.faults

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
OUTBOX_HEALTH = "paysaga.outbox"

#: ~1 MB: Kafka takes it, but its dead letter (the record plus dlt_* headers) is larger
#: than the services' producers send (message.max.bytes 1000000).
BIG_BYTES = 1_000_000
#: The service whose consumer group reads each saga topic.
CONSUMER_OF = {"orders": "payment", "payments": "payment", "transactions": "order"}

DEADLINE_S = 5.0  # ORDER_SAGA_DEADLINE_S of the stacks that freeze a service
#: A consumer frozen this long has lost its partitions (session.timeout.ms of the services).
SESSION_TIMEOUT_S = 10.0
PRICE_1 = 5000  # product 1 costs 50.00
DEADLINE_REASON = "saga deadline passed"
CHARGE, REFUND = payments_pb2.TRANSACTION_KIND_CHARGE, payments_pb2.TRANSACTION_KIND_REFUND


# -- stacks ------------------------------------------------------------------------------


@pytest.fixture
def postgres_stack(
    fault_broker: KafkaRuntime,
    postgres_server: PostgresRuntime,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[FaultStack]:
    """Both services on new PostgreSQL databases."""
    fault_stack = FaultStack(
        fault_broker, tmp_path, request.node.name, db="postgres", postgres=postgres_server
    )
    with fault_stack.running():
        yield fault_stack


@pytest.fixture
def deadline_stack(
    fault_broker: KafkaRuntime, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[FaultStack]:
    """Both services, orders failed by their saga deadline after DEADLINE_S seconds."""
    fault_stack = FaultStack(fault_broker, tmp_path, request.node.name)
    for proc in fault_stack.all_processes():
        proc.env = {**proc.env, "ORDER_SAGA_DEADLINE_S": f"{DEADLINE_S:g}"}
    with fault_stack.running():
        yield fault_stack


def _assert_refunded_once(stack: FaultStack, order_id: str, before: int) -> None:
    """The order FAILED by its deadline, was charged and refunded once; the money is back."""
    orders_api, payments_api = stack.orders_stub(), stack.payments_stub()
    order = wait_refund_noted(orders_api, order_id)
    assert order.status == orders_pb2.ORDER_STATUS_FAILED
    assert order.failure_reason.startswith(DEADLINE_REASON), order.failure_reason
    assert "; refunded 50.00 (transaction " in order.failure_reason, order.failure_reason
    assert kinds(payments_api, order_id) == [CHARGE, REFUND]
    approved, refunded_at, _ = payment_row(stack, order_id) or (None, None, None)
    assert approved and refunded_at is not None, "the payment was not approved, then refunded"
    assert balance(payments_api, 1) == before, "the user did not end with the money they had"


# -- ~1 MB poison ------------------------------------------------------------------------


def test_a_1mb_record_on_each_topic_is_parked_and_the_orders_after_it_end(
    stack: FaultStack,
) -> None:
    keys = {topic: f"big-{topic}-{uuid.uuid4()}".encode() for topic in CONSUMER_OF}
    with Scenario(stack, "~1 MB poison x3 topics") as run:
        time.sleep(2.0)
        injected = time.monotonic()
        # No CloudEvents headers: each is dead-lettered, and the dead letter is too large.
        produce(stack.bootstrap, [(t, key, os.urandom(BIG_BYTES), []) for t, key in keys.items()])
        time.sleep(4.0)
        # Parked rows never reach a DLT: expected_dead_letters stays 0.
        outcome = run.finish()
    assert_holds(outcome, stack)
    assert any(a.at > injected for a in run.load.accepted), "no order placed after the poison"

    for service in sorted(set(CONSUMER_OF.values())):
        url = stack.database_urls[service]
        parked = query(url, "SELECT topic, key, value, error FROM outbox_parked")
        wanted = {f"{t}.dlt": keys[t] for t, s in CONSUMER_OF.items() if s == service}
        assert sorted(str(row[0]) for row in parked) == sorted(wanted), (
            f"{service}: parked {[(r[0], r[3]) for r in parked]}, wanted one row for each of "
            f"{sorted(wanted)}"
        )
        for topic, key, value, error in parked:
            assert key == wanted[str(topic)], f"{service}: parked another record"
            assert isinstance(value, bytes) and len(value) == BIG_BYTES, f"{service}: value altered"
            assert "too large" in str(error).lower(), f"{service}: parked because {error!r}"
        address = stack.address(service)
        wait_for(
            f"{service}'s {OUTBOX_HEALTH} health to say NOT_SERVING",
            lambda a=address: health(a, OUTBOX_HEALTH) == NOT_SERVING,  # type: ignore[misc]
            30,
            0.5,
        )
        assert health(address, "") == SERVING, f"{service} stopped serving"


# -- a poison the database refuses ------------------------------------------------------


def _nul_order_purchased() -> tuple[str, bytes, Headers]:
    """A well-formed OrderPurchased whose order id PostgreSQL cannot store (a NUL byte)."""
    order_id = f"nul\x00{uuid.uuid4()}"
    event = events_pb2.OrderPurchased(
        order_id=order_id,
        user_id=2,
        product_id=1,
        amount_cents=PRICE_1,
        create_time=to_timestamp(utcnow()),
    )
    orders_topic = TOPICS["orders"]
    meta = EventMeta.new(ce_type=orders_topic.ce_type, source=orders_topic.source, subject=order_id)
    return order_id, event.SerializeToString(), meta.headers()


def test_a_poison_the_database_would_refuse_is_dead_lettered_alone(
    postgres_stack: FaultStack,
) -> None:
    stack = postgres_stack
    _, value, headers = _nul_order_purchased()
    key = f"nul-{uuid.uuid4()}".encode()
    with Scenario(stack, "NUL byte poison, PostgreSQL") as run:
        run.expected_dead_letters = 1
        time.sleep(2.0)
        injected = time.monotonic()
        produce(stack.bootstrap, [("orders", key, value, headers)])
        time.sleep(4.0)
        outcome = run.finish()
    assert_holds(outcome, stack)

    (dead,) = read_topic(stack.bootstrap, "orders.dlt", lambda r: r.key() == key, 1, 60)
    dlt_headers = dead.headers()
    assert isinstance(dlt_headers, list)
    found = header_dict(dlt_headers)
    assert dead.value() == value, "the dead letter is not the record byte for byte"
    assert found.get("dlt_topic") == "orders"
    reason = found.get("dlt_reason", "")
    # PostgreSQL cannot store a NUL: the consumer refuses such an id as an invalid event
    # before the database sees it (a CHECK it would fail is the narrowing tests' case).
    assert "NUL" in reason, f"dlt_reason {reason!r}"
    assert not query(stack.payment_url, "SELECT 1 FROM payment WHERE order_id LIKE 'nul%'")

    stored = orders(stack.order_url)
    after = [a for a in run.load.accepted if a.at > injected and a.user_id != 1]
    assert after, "no order of a funded user placed after the poison"
    unfinished = [a.order_id for a in after if stored[a.order_id].status != "COMPLETED"]
    assert not unfinished, f"orders placed after the poison did not complete: {unfinished[:3]}"


# -- a service frozen past the saga deadline ------------------------------------------------


def test_payment_frozen_past_the_deadline_never_charges_the_late_purchase(
    deadline_stack: FaultStack,
) -> None:
    """The purchase reaches the resumed Payment service after its deadline: declined, so
    no money is held for the FAILED order, not even until a refund."""
    stack = deadline_stack
    payment = stack.process("payment")
    orders_api, payments_api = stack.orders_stub(), stack.payments_stub()
    start = balances(stack.payment_url)
    before = balance(payments_api, 1)
    assert before >= PRICE_1, "user 1 cannot pay for product 1"
    payment.signal(signal.SIGSTOP)
    try:
        order = place(orders_api, 1)
        ended = wait_terminal(orders_api, order.id, DEADLINE_S + 30)
        assert ended.status == orders_pb2.ORDER_STATUS_FAILED
        assert ended.failure_reason.startswith(DEADLINE_REASON), ended.failure_reason
    finally:
        payment.signal(signal.SIGCONT)
    # Resumed, the Payment service reads OrderPurchased (too late: declined), then OrderFailed.
    decided = wait_for("the late purchase's decision", lambda: payment_row(stack, order.id), 30)
    approved, refunded_at, reason = decided
    assert (approved, refunded_at, reason) == (False, None, LATE_PURCHASE)
    wait_consumed(stack, "payment", "orders")
    assert kinds(payments_api, order.id) == [], "a purchase past its deadline was charged"
    assert balance(payments_api, 1) == before, "the user did not keep their money"
    ended = orders_api.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id)).order
    assert "refunded" not in ended.failure_reason, "nothing was taken, nothing to give back"
    later = place(orders_api, 2)
    assert wait_terminal(orders_api, later.id, 60).status == orders_pb2.ORDER_STATUS_COMPLETED
    assert_saga_holds(stack, start, {order.id, later.id})


class Frozen(NamedTuple):
    """An order of user 1 whose debit a service was frozen right after."""

    order: orders_pb2.Order
    #: User 1's balance before the order.
    before: int
    #: time.monotonic() when the order was placed.
    placed_at: float
    #: Every order placed to get there (earlier tries may have ended before the freeze).
    placed: set[str]


#: Orders placed, at most, to freeze a service between a debit and its outcome. Each try is
#: a race (the outcome is published a few milliseconds after the debit commits) that is
#: lost now and then, more often on an idle machine; a lost try costs about a second.
FREEZE_TRIES = 10


def _freeze_after_the_debit(
    stack: FaultStack, target: ServiceProcess, in_time: Callable[[str], bool]
) -> Frozen:
    """Place orders of user 1 until `target` is frozen (SIGSTOP) right after one's debit,
    before its outcome went further than `in_time(order_id)` allows."""
    orders_api, payments_api = stack.orders_stub(), stack.payments_stub()
    placed: set[str] = set()
    for _ in range(FREEZE_TRIES):
        before = balance(payments_api, 1)
        order = place(orders_api, 1)
        placed.add(order.id)
        placed_at = time.monotonic()
        wait_for("the debit", lambda o=order: payment_row(stack, o.id), 30, 0.001)  # type: ignore[misc]
        target.signal(signal.SIGSTOP)
        if in_time(order.id):
            assert (payment_row(stack, order.id) or [False])[0], "the payment was declined"
            return Frozen(order, before, placed_at, placed)
        target.signal(signal.SIGCONT)  # the outcome went on before the freeze: try again
    pytest.fail(
        f"{target.name} could not be frozen in time after the debit of {FREEZE_TRIES} orders"
    )


def _outcome_held_back(stack: FaultStack, order_id: str) -> bool:
    """With the Payment service frozen: True if the order's outcome never reached the Order
    service (it is frozen with it, in its outbox or unsent)."""
    time.sleep(1.0)  # what the frozen process had sent reaches the broker
    wait_consumed(stack, "order", "transactions")
    return stored_status(stack, order_id) == "CREATED"


def test_payment_frozen_after_the_debit_gives_the_money_back_once(
    deadline_stack: FaultStack,
) -> None:
    stack = deadline_stack
    payment = stack.process("payment")
    set_balances(stack.payment_url, {1: 1_000_000})  # enough for a few tries
    start = balances(stack.payment_url)
    frozen = _freeze_after_the_debit(stack, payment, lambda o: _outcome_held_back(stack, o))
    try:
        ended = wait_terminal(stack.orders_stub(), frozen.order.id, DEADLINE_S + 30)
        assert ended.status == orders_pb2.ORDER_STATUS_FAILED
        assert ended.failure_reason.startswith(DEADLINE_REASON), ended.failure_reason
    finally:
        payment.signal(signal.SIGCONT)
    # Resumed, the Payment service reads OrderFailed: the money taken comes back, once.
    _assert_refunded_once(stack, frozen.order.id, frozen.before)
    assert_saga_holds(stack, start, frozen.placed)


def test_order_frozen_past_the_deadline_and_its_session_lets_the_waiting_outcome_win(
    deadline_stack: FaultStack,
) -> None:
    """Frozen right after the debit, with the CHARGE outcome in Kafka before the deadline,
    until past the deadline and the consumer's session timeout (its partitions leave it).
    On SIGCONT the deadline worker waits until the replica has applied what is on its
    partitions: the outcome wins, the order COMPLETES, charged once, never refunded."""
    stack = deadline_stack
    order_service = stack.process("order")
    set_balances(stack.payment_url, {1: 1_000_000})  # enough for a few tries
    start = balances(stack.payment_url)
    frozen = _freeze_after_the_debit(
        stack, order_service, lambda o: stored_status(stack, o) == "CREATED"
    )
    order_id = frozen.order.id
    try:
        assert stored_kinds(stack, order_id) == ["CHARGE"]  # written with the debit
        read_topic(stack.bootstrap, "transactions", lambda r: _subject(r) == order_id, 1, 30)
        assert time.monotonic() < frozen.placed_at + DEADLINE_S, "the outcome came too late"
        frozen_until = frozen.placed_at + max(DEADLINE_S, SESSION_TIMEOUT_S) + 2.0
        time.sleep(max(0.0, frozen_until - time.monotonic()))
        assert stored_status(stack, order_id) == "CREATED"
    finally:
        order_service.signal(signal.SIGCONT)
    ended = wait_terminal(stack.orders_stub(), order_id, 60)
    assert ended.status == orders_pb2.ORDER_STATUS_COMPLETED, ended.failure_reason
    assert kinds(stack.payments_stub(), order_id) == [CHARGE]
    assert balance(stack.payments_stub(), 1) == frozen.before - PRICE_1
    assert_saga_holds(stack, start, frozen.placed)


def _subject(record: Message) -> str:
    """A record's CloudEvents subject (the order id of a saga event)."""
    headers = record.headers()
    return header_dict(headers).get("ce_subject", "") if isinstance(headers, list) else ""


# -- clients without an idempotency key -------------------------------------------------------


def test_retries_without_request_id_are_refused_and_with_one_make_one_order(
    stack: FaultStack,
) -> None:
    user, attempts, requests = 1, 3, 10
    stub = stack.orders_stub()
    keyless = [orders_pb2.CreateOrderRequest(user_id=user, product_id=1) for _ in range(requests)]
    keyed = [
        orders_pb2.CreateOrderRequest(user_id=user, product_id=1, request_id=str(uuid.uuid4()))
        for _ in range(requests)
    ]

    def send(request: orders_pb2.CreateOrderRequest) -> str:
        try:
            return stub.CreateOrder(request, timeout=30).order.id
        except grpc.RpcError as exc:
            return f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]

    balances_wanted = {**FUNDED, user: 50_000_000}
    scenario = Scenario(
        stack,
        "retries without request_id",
        start_balances=balances_wanted,
        users=(2, 3, 4, 5),  # user 1 is the retrying client's alone
        rate=20.0,
    )
    with scenario as run:
        time.sleep(1.0)
        with ThreadPoolExecutor(max_workers=attempts * requests) as pool:
            refused = list(pool.map(send, [r for r in keyless for _ in range(attempts)]))
            answers = list(pool.map(send, [r for r in keyed for _ in range(attempts)]))
        failed = [a for a in answers if ": " in a]
        ids = set(answers) - set(failed)
        run.extra_accepted |= ids
        time.sleep(2.0)
        outcome = run.finish()
    assert_holds(outcome, stack)

    assert not failed, f"keyed CreateOrder refused: {failed[:3]}"
    wrong = [a for a in refused if not a.startswith("INVALID_ARGUMENT: request_id is required")]
    assert not wrong, f"keyless CreateOrder not refused as it should be: {wrong[:3]}"
    by_request = [answers[i : i + attempts] for i in range(0, len(answers), attempts)]
    assert all(len(set(same)) == 1 for same in by_request), (
        f"retries got other orders: {by_request}"
    )
    mine = [o for o in orders(stack.order_url).values() if o.user_id == user]
    assert sorted(o.id for o in mine) == sorted(ids), "orders of the user beyond the keyed ones"
    assert all(o.status == "COMPLETED" for o in mine)
    assert balance(stack.payments_stub(), user) == balances_wanted[user] - requests * PRICE_1
