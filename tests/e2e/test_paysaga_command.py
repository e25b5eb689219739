"""The installed `paysaga` command against the real services in their own processes: help,
a completed order's timeline, a poison record on `payments` listed, shown, dry-run and
redriven, stuck orders while the Payment service is paused, held money (none), and status
during a broker outage."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from services.common.messaging.cloudevents import EventMeta
from services.saga.topics import PAYMENTS
from tests.e2e.conftest import ORDER, GrpcurlStack, Paused, wait_status
from tests.support import wait_for

pytestmark = pytest.mark.e2e

#: The console script `pip install` made, next to this interpreter.
PAYSAGA = str(Path(sys.executable).parent / "paysaga")


def paysaga(
    stack: GrpcurlStack, *argv: str, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    flags = ["--order", stack.stack.order_address, "--payment", stack.stack.payment_address]
    return subprocess.run(
        [PAYSAGA, *flags, *argv], capture_output=True, text=True, timeout=timeout_s
    )


def paysaga_json(stack: GrpcurlStack, *argv: str) -> Any:
    done = paysaga(stack, *argv, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def new_order(stack: GrpcurlStack, user_id: int, product_id: int, key: str) -> str:
    body = {"user_id": user_id, "product_id": product_id, "request_id": key}
    return str(stack.order.call(f"{ORDER}/CreateOrder", body)["order"]["id"])  # type: ignore[index]


def test_help_lists_the_commands(stack: GrpcurlStack) -> None:
    done = subprocess.run([PAYSAGA, "--help"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0
    for command in ("order", "orders", "dlq", "status"):
        assert command in done.stdout
    sub = subprocess.run([PAYSAGA, "dlq", "--help"], capture_output=True, text=True, timeout=30)
    for command in ("list", "show", "redrive"):
        assert command in sub.stdout
    orders = subprocess.run(
        [PAYSAGA, "orders", "--help"], capture_output=True, text=True, timeout=30
    )
    for command in ("stuck", "held"):
        assert command in orders.stdout
    redrive = subprocess.run(
        [PAYSAGA, "dlq", "redrive", "--help"], capture_output=True, text=True, timeout=30
    )
    assert "--dry-run" in redrive.stdout


def test_timeline_of_a_completed_order(stack: GrpcurlStack) -> None:
    order_id = new_order(stack, 2, 1, "e2e-timeline")
    assert wait_status(stack.order, order_id)["status"] == "ORDER_STATUS_COMPLETED"
    done = paysaga(stack, "order", "timeline", order_id)
    assert done.returncode == 0, done.stderr
    assert f"order {order_id}: COMPLETED" in done.stdout
    for where in ("orders[", "payments[", "transactions["):
        assert where in done.stdout, f"no step applied from {where}: {done.stdout}"
    for service in ("order/order-0", "payment/payment-0"):
        assert service in done.stdout
    # The ID column pairs an event's "produced" and "applied" rows: each event is shown by
    # the random end of its id (ids begin with their time, shared by an order's events).
    event_ids = {
        step["event_id"]
        for step in paysaga_json(stack, "order", "timeline", order_id)["steps"]
        if step["event_id"]
    }
    assert len(event_ids) >= 4, event_ids
    assert len({event_id[-8:] for event_id in event_ids}) == len(event_ids)
    for event_id in event_ids:
        assert f" {event_id[-8:]} " in done.stdout, f"{event_id} not shown: {done.stdout}"


def test_a_poison_record_on_payments_is_listed_shown_and_redriven_once(
    stack: GrpcurlStack,
) -> None:
    order_id = "0badc0de-0000-4000-8000-00000000e2e1"
    meta = EventMeta.new(ce_type=PAYMENTS.ce_type, source=PAYMENTS.source, subject=order_id)
    producer = Producer({"bootstrap.servers": stack.stack.bootstrap})
    producer.produce("payments", key=b"2", value=b"\x08\x96\x01garbage\xff", headers=meta.headers())
    assert producer.flush(30) == 0

    def listed() -> list[dict[str, Any]]:
        found = paysaga_json(stack, "dlq", "list", "--topic", "payments")
        return [d for d in found if d["order_id"] == order_id]

    [letter] = wait_for("the poison record in `dlq list`", listed)
    assert "payload is not a valid paysaga.v1.PaymentProcessed" in letter["reason"]
    table = paysaga(stack, "dlq", "list").stdout
    assert letter["id"] in table and "not a valid" in table
    shown = paysaga(stack, "dlq", "show", letter["id"])
    assert shown.returncode == 0, shown.stderr
    assert f"ce_subject = {order_id}" in shown.stdout and "does not decode" in shown.stdout
    assert "67 61 72 62 61 67 65" in shown.stdout, "the payload in hex"

    dry = paysaga(stack, "dlq", "redrive", letter["id"], "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert dry.stdout.startswith("dry run, nothing sent: 1 would be redriven")
    assert letter["id"] in dry.stdout and "named; redrive 1 of its record (at most 3)" in dry.stdout
    [still] = listed()
    assert not still["redrive_count"], "a dry run sends and records nothing"

    done = paysaga(stack, "dlq", "redrive", letter["id"], "--by", "alice")
    assert done.returncode == 0, done.stderr
    assert f"redrive:{letter['id']}" in done.stdout
    # Again at once: sent with the same redrive id (the inbox drops it), or refused if the
    # first copy was consumed in between.
    again = paysaga(stack, "dlq", "redrive", letter["id"], "--by", "bob")
    assert again.returncode == 0 or "consumed already" in again.stderr, again.stderr
    # Still poison: dead-lettered again, once, however often it was redriven.
    wait_for("the redriven copy to be dead-lettered", lambda: len(listed()) > 1)
    wait_for("the copies to be consumed", lambda: payments_caught_up(stack))
    found = listed()
    assert len(found) == 2, found
    original = next(d for d in found if d["id"] == letter["id"])
    assert original["redrive_count"] == (2 if again.returncode == 0 else 1)
    # Now a redrive of the original is refused: the new dead letter is the one to redrive.
    refused = paysaga(stack, "dlq", "redrive", letter["id"], "--by", "carol")
    assert refused.returncode == 1 and "redrive that new dead letter" in refused.stderr


def payments_caught_up(stack: GrpcurlStack) -> bool:
    """The Payment service's group has consumed everything on `payments`."""
    [payment] = [r for r in paysaga_json(stack, "status") if r["service"] == "payment"]
    lags = [p for p in payment["lag"] if p["topic"] == "payments"]
    return bool(lags) and all(int(p["lag"]) == 0 for p in lags)


@pytest.fixture
def paused_payment(stack: GrpcurlStack) -> Iterator[Paused]:
    with Paused(stack.stack, "payment") as paused:
        yield paused


def test_stuck_orders_while_the_payment_service_is_paused(
    stack: GrpcurlStack, paused_payment: Paused
) -> None:
    order_id = new_order(stack, 3, 1, "e2e-stuck")

    def stuck() -> list[dict[str, Any]]:
        found = paysaga_json(stack, "orders", "stuck", "--older-than", "1s")
        return [o for o in found if o["order_id"] == order_id]

    [order] = wait_for("the order in `orders stuck`", stuck, timeout_s=30)
    assert order["waiting_for"].startswith("payment decision: OrderPurchased published")
    table = paysaga(stack, "orders", "stuck", "--older-than", "1s").stdout
    assert order_id in table and "payment decision" in table
    status = paysaga(stack, "--timeout", "2s", "status")
    assert status.returncode == 1, "a replica that does not answer fails the status"
    assert "cannot reach the payment service" in status.stdout
    paused_payment.resume()
    assert wait_status(stack.order, order_id)["status"] == "ORDER_STATUS_COMPLETED"
    assert stuck() == []


def test_held_money_is_listed_and_counted(stack: GrpcurlStack) -> None:
    """A saga that ends by itself holds no money: `orders held` answers from both services
    with nothing, and `status` counts nothing held (the integration tests hold money on
    purpose and watch it heal)."""
    order_id = new_order(stack, 4, 2, "e2e-held")
    assert wait_status(stack.order, order_id)["status"] == "ORDER_STATUS_COMPLETED"
    assert paysaga_json(stack, "orders", "held", "--older-than", "1ms") == []
    table = paysaga(stack, "orders", "held", "--older-than", "1ms")
    assert table.returncode == 0, table.stderr
    assert "0 seen by the order service" in table.stdout and "(none)" in table.stdout
    replicas = paysaga_json(stack, "status")
    assert {r["service"]: int(r["held_orders"]) for r in replicas} == {"order": 0, "payment": 0}
    assert "HELD" in paysaga(stack, "status").stdout


def test_status_during_a_broker_outage(stack: GrpcurlStack) -> None:
    healthy = paysaga_json(stack, "status")
    assert {r["service"] for r in healthy} == {"order", "payment"}
    for replica in healthy:
        assert not replica["lag_error"] and replica["health"]["(server)"] == "SERVING"
        assert replica["lag"] and replica["health_names"]
    kafka = stack.stack.kafka
    assert not isinstance(kafka, str)
    # A frozen broker: every call to it times out, as in an outage (and it thaws at once).
    pids = [pid for pid in kafka.pids() if pid is not None]
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        replicas = paysaga_json(stack, "status")
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    for replica in replicas:
        assert "Kafka did not answer" in replica["lag_error"], replica
        assert any("consumer lag unknown" in p for p in replica["problems"])
        assert replica["health"]["(server)"] in ("SERVING", "NOT_SERVING")
