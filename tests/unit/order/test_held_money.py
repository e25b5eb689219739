"""Held money, as the Order service sees and heals it: the charge and refund it applies are
recorded on the order (even a charge after the order FAILED), and an order FAILED, charged
and not refunded has its OrderFailed announced again, at most once per interval, until the
refund arrives.

The real hop (inbox, FinishOrders, outbox) and worker step on each database kind; Kafka is
replaced by in-memory records.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import update
from sqlmodel import col, select

from paysaga.v1 import events_pb2, payments_pb2
from services.common.messaging.cloudevents import EventMeta
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import TABLES as JOURNAL_TABLES
from services.common.messaging.outbox import OutboxRecord
from services.common.persistence.db import Database
from services.common.timeutil import utcnow
from services.order.handlers import FinishOrders
from services.order.models import ORDERS_TABLE, Order, SagaDeadline
from services.order.refunds import reannounce_held
from services.saga.topics import SAGA_TOPICS, TRANSACTIONS
from tests.unit.fakes import FakeConsumer, FakeRecord

pytestmark = pytest.mark.unit

PRICE = 5000
USER = 7


@pytest.fixture
def db(store_url: str) -> Iterator[Database]:
    database = Database(store_url)
    database.create_tables([Order, SagaDeadline, OutboxRecord, ProcessedEvent, *JOURNAL_TABLES])
    yield database
    database.dispose()


@pytest.fixture
def hop(db: Database) -> EventConsumer:
    return EventConsumer(db, FakeConsumer(), {TRANSACTIONS.name: FinishOrders}, topics=SAGA_TOPICS)  # type: ignore[arg-type]


def add_order(db: Database, status: str, reason: str = "") -> str:
    order_id = str(uuid.uuid4())
    with db.write() as session:
        session.add(
            Order(
                id=order_id,
                user_id=USER,
                product_id=1,
                price_cents=PRICE,
                status=status,
                failure_reason=reason,
            )
        )
    return order_id


def outcome(offset: int, order_id: str, kind: int, successful: bool = True) -> FakeRecord:
    """A TransactionRecorded of `order_id` under a new event id."""
    meta = EventMeta.new(ce_type=TRANSACTIONS.ce_type, source=TRANSACTIONS.source, subject=order_id)
    event = events_pb2.TransactionRecorded(
        order_id=order_id,
        user_id=USER,
        amount_cents=PRICE,
        status=events_pb2.TRANSACTION_STATUS_SUCCESSFUL
        if successful
        else events_pb2.TRANSACTION_STATUS_UNSUCCESSFUL,
        transaction_id=str(uuid.uuid4()),
        kind=kind,
        reason="" if successful else "insufficient balance",
    )
    return FakeRecord("transactions", 0, offset, event.SerializeToString(), meta.headers())


CHARGE = payments_pb2.TRANSACTION_KIND_CHARGE
REFUND = payments_pb2.TRANSACTION_KIND_REFUND


def order(db: Database, order_id: str) -> Order:
    with db.read() as session:
        found = session.get(Order, order_id)
    assert found is not None
    return found


def announced(db: Database, event_type: type[Any]) -> list[Any]:
    """The events of this type staged in the outbox, oldest first."""
    with db.read() as session:
        rows = session.exec(select(OutboxRecord).order_by(col(OutboxRecord.seq))).all()
    name = event_type.DESCRIPTOR.full_name.encode()
    return [event_type.FromString(row.value) for row in rows if name in row.headers]


def age(db: Database, order_id: str, **columns: timedelta) -> None:
    """Move these time columns of the order that far into the past."""
    with db.write() as session:
        session.execute(
            update(ORDERS_TABLE)
            .where(ORDERS_TABLE.c.id == order_id)
            .values({name: utcnow() - ago for name, ago in columns.items()})
        )


def test_a_completed_order_records_its_charge_and_is_not_held(
    db: Database, hop: EventConsumer
) -> None:
    order_id = add_order(db, "CREATED")
    declined = add_order(db, "CREATED")
    hop.process_batch([outcome(0, order_id, CHARGE), outcome(1, declined, CHARGE, False)])  # type: ignore[list-item]
    completed, failed = order(db, order_id), order(db, declined)
    assert completed.status == "COMPLETED" and completed.charged_at is not None
    assert failed.status == "FAILED" and failed.charged_at is None
    assert reannounce_held(db, after_s=0) == 0


def test_a_charge_after_the_order_failed_is_held_until_its_refund(
    db: Database, hop: EventConsumer
) -> None:
    order_id = add_order(db, "FAILED", "saga deadline passed")
    hop.process_batch([outcome(0, order_id, CHARGE)])  # type: ignore[list-item]
    held = order(db, order_id)
    assert (held.status, held.version, held.failure_reason) == ("FAILED", 1, "saga deadline passed")
    assert held.charged_at is not None and held.refunded_at is None
    assert announced(db, events_pb2.OrderUpdated) == [], "no change to announce"
    assert reannounce_held(db, after_s=60) == 0, "not held for 60 s yet"

    age(db, order_id, charged_at=timedelta(minutes=2))
    assert reannounce_held(db, after_s=60) == 1
    assert reannounce_held(db, after_s=60) == 0, "at most once per interval"
    [again] = announced(db, events_pb2.OrderFailed)
    assert (again.order_id, again.user_id, again.amount_cents) == (order_id, USER, PRICE)
    assert again.reason == "saga deadline passed"
    assert order(db, order_id).refund_reannounced_at is not None
    age(db, order_id, refund_reannounced_at=timedelta(minutes=1, seconds=1))
    assert reannounce_held(db, after_s=60) == 1, "again once the interval passed"
    assert len(announced(db, events_pb2.OrderFailed)) == 2

    hop.process_batch([outcome(1, order_id, REFUND)])  # type: ignore[list-item]
    refunded = order(db, order_id)
    assert refunded.refunded_at is not None and "; refunded 50.00" in refunded.failure_reason
    age(db, order_id, refund_reannounced_at=timedelta(hours=1))
    assert reannounce_held(db, after_s=60) == 0, "refunded: no longer held"


def test_a_refund_noted_before_the_columns_existed_is_recorded_on_redelivery(
    db: Database, hop: EventConsumer
) -> None:
    order_id = add_order(db, "FAILED", "declined; refunded 50.00 (transaction t-1)")
    hop.process_batch([outcome(0, order_id, CHARGE), outcome(1, order_id, REFUND)])  # type: ignore[list-item]
    noted = order(db, order_id)
    assert noted.charged_at is not None and noted.refunded_at is not None
    assert noted.version == 1 and noted.failure_reason.count("; refunded") == 1
    assert reannounce_held(db, after_s=0) == 0
