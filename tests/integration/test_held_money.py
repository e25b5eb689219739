"""Held money heals by itself (real Kafka, SQLite and PostgreSQL): an order FAILED after its
charge whose OrderFailed was parked holds the money; `paysaga orders held` and `status` show
it from both services; the Order service's re-announcement has it refunded exactly once,
and then nothing is held."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from sqlalchemy import delete, select
from sqlmodel import col

from paysaga.v1 import events_pb2
from services.cli import run
from services.common.messaging.journal import SagaStep, StepKind
from services.common.messaging.outbox import OutboxRecord, OutboxWriter, ParkedRecord
from services.common.timeutil import utcnow
from services.order.domain import Status, deadline_reason
from services.order.handlers import write_order_changes
from services.order.models import ORDERS_TABLE, Order
from services.order.refunds import reannounce_held
from services.payment.models import Account, Payment, Transaction
from services.saga.topics import SAGA_TOPICS
from tests.integration.admin_support import Admin, serve_admin
from tests.integration.conftest import Saga
from tests.support import wait_for

pytestmark = pytest.mark.integration

START = 10000
PRICE = 5000  # product 1
_FAILED = events_pb2.OrderFailed.DESCRIPTOR.full_name


@pytest.fixture(scope="module")
def admin(saga: Saga) -> Iterator[Admin]:
    with serve_admin(saga) as served:
        yield served


def fail_after_charge_and_park_order_failed(saga: Saga, order_id: str) -> None:
    """The order's deadline passes after its charge, before its outcome is applied, and its
    OrderFailed is parked at once (as a refused produce parks it): nothing asks for the
    refund."""
    with saga.order_db.write() as session:
        # Holding the order's row (and, on SQLite, the write lock) keeps the outcome out
        # while the Payment service charges.
        row = dict(
            session.execute(
                select(ORDERS_TABLE).where(ORDERS_TABLE.c.id == order_id).with_for_update()
            )
            .mappings()
            .one()
        )
        assert row["status"] == Status.CREATED.value

        def charged() -> bool:
            with saga.payment_db.read() as payments:
                payment = payments.get(Payment, order_id)
            return payment is not None and payment.approved

        wait_for("the payment to be charged", charged, timeout_s=20)
        row.update(status=Status.FAILED.value, failure_reason=deadline_reason(60))
        row.update(updated_at=utcnow(), version=row["version"] + 1)
        outbox = OutboxWriter(SAGA_TOPICS)
        write_order_changes(session, outbox, [row], {order_id})
        [failed_id] = [row["event_id"] for row in outbox.rows if row["topic"] == "orders"]
        outbox.write(session)
        [parked] = session.execute(
            select(OutboxRecord).where(col(OutboxRecord.event_id) == failed_id)
        ).scalars()
        session.add(
            ParkedRecord(
                seq=parked.seq, event_id=parked.event_id, topic=parked.topic, key=parked.key,
                value=parked.value, headers=parked.headers, created_at=parked.created_at,
                attempts=1, error="TOPIC_AUTHORIZATION_FAILED (a brief ACL glitch)",
            )
        )  # fmt: skip
        session.execute(delete(OutboxRecord).where(col(OutboxRecord.seq) == parked.seq))


def held_view(admin: Admin, capsys: pytest.CaptureFixture[str], order_id: str) -> list[str]:
    """The Payment service's view of the order in `orders held`, if the order is listed."""
    found = admin.cli(capsys, "orders", "held", "--older-than", "1ms")
    return [o["payment"] for o in found if o["order_id"] == order_id]


def order_failed_applied(saga: Saga, order_id: str) -> int:
    with saga.payment_db.read() as session:
        steps = session.execute(
            select(SagaStep)
            .where(col(SagaStep.order_id) == order_id)
            .where(col(SagaStep.kind) == StepKind.APPLIED.value)
            .where(col(SagaStep.event_type) == _FAILED)
        ).scalars()
        return len(list(steps))


def test_a_parked_order_failed_heals_and_refunds_once(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    saga = admin.saga
    user = saga.new_user(START)
    order_id = saga.order(user, 1).id
    fail_after_charge_and_park_order_failed(saga, order_id)

    def seen_charged() -> bool:
        with saga.order_db.read() as session:
            order = session.get(Order, order_id)
        return order is not None and order.charged_at is not None

    wait_for("the Order service to apply the charge of the FAILED order", seen_charged)
    assert held_view(admin, capsys, order_id) == ["charged, not refunded"]
    table = capsys.readouterr() and run([*admin.flags, "orders", "held", "--older-than", "1ms"])
    out = capsys.readouterr().out
    assert table == 0 and order_id in out and "50.00" in out and "never" in out
    replicas = admin.cli(capsys, "status")
    held = {r["service"]: int(r["held_orders"]) for r in replicas}
    assert held["order"] >= 1 and held["payment"] >= 1, replicas
    with saga.payment_db.read() as session:
        account = session.get(Account, user)
    assert account is not None and account.balance_cents == START - PRICE, "money held"

    # The re-announcement, twice in a row: two OrderFailed with new event ids.
    first = reannounce_held(saga.order_db, after_s=0.001)
    time.sleep(0.01)
    second = reannounce_held(saga.order_db, after_s=0.001)
    assert first == 1 and second in (0, 1)  # 0 only if the refund was applied in between
    announcements = first + second

    def refunded() -> bool:
        with saga.order_db.read() as session:
            order = session.get(Order, order_id)
        return order is not None and order.refunded_at is not None

    wait_for("the refund to reach the Order service", refunded)
    wait_for(
        "every OrderFailed sent again to be applied",
        lambda: order_failed_applied(saga, order_id) == announcements,
    )
    with saga.payment_db.read() as session:
        kinds = sorted(
            t.kind
            for t in session.execute(
                select(Transaction).where(col(Transaction.order_id) == order_id)
            ).scalars()
        )
        account = session.get(Account, user)
    assert kinds == ["CHARGE", "REFUND"], "refunded exactly once"
    assert account is not None and account.balance_cents == START
    with saga.order_db.read() as session:
        order = session.get(Order, order_id)
    assert order is not None and "; refunded 50.00" in order.failure_reason
    assert held_view(admin, capsys, order_id) == []
    assert reannounce_held(saga.order_db, after_s=0.001) == 0
