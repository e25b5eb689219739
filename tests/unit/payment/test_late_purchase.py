"""A purchase that reaches the Payment service after its saga deadline is never charged.

The real hop (inbox, handler, outbox) on each database kind; Kafka is replaced by in-memory
records.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlmodel import col, select

from paysaga.v1 import events_pb2
from services.common.messaging.cloudevents import EventMeta
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import TABLES as JOURNAL_TABLES
from services.common.messaging.outbox import OutboxRecord
from services.common.persistence.db import Database
from services.common.timeutil import to_timestamp, utcnow
from services.payment.handlers import LATE_PURCHASE, ChargeOrders
from services.payment.models import Account, Payment, Transaction
from services.payment.store import seed_accounts
from services.saga.topics import ORDERS, SAGA_TOPICS
from tests.unit.fakes import FakeConsumer, FakeRecord

pytestmark = pytest.mark.unit

PRICE = 5000


@pytest.fixture
def hop(store_url: str) -> tuple[EventConsumer, Database]:
    db = Database(store_url)
    db.create_tables([Account, Payment, Transaction, OutboxRecord, ProcessedEvent, *JOURNAL_TABLES])
    seed_accounts(db)
    consumer = EventConsumer(db, FakeConsumer(), {ORDERS.name: ChargeOrders}, topics=SAGA_TOPICS)  # type: ignore[arg-type]
    return consumer, db


def purchase(offset: int, order_id: str, deadline: datetime | None) -> FakeRecord:
    """An OrderPurchased of user 1 on `orders`, with this saga deadline (None: unset)."""
    meta = EventMeta.new(ce_type=ORDERS.ce_type, source=ORDERS.source, subject=order_id)
    event = events_pb2.OrderPurchased(
        order_id=order_id,
        user_id=1,
        product_id=1,
        amount_cents=PRICE,
        create_time=to_timestamp(utcnow() - timedelta(seconds=60)),
    )
    if deadline is not None:
        event.deadline_time.CopyFrom(to_timestamp(deadline))
    return FakeRecord("orders", 0, offset, event.SerializeToString(), meta.headers())


def balance(db: Database) -> int:
    with db.read() as session:
        account = session.get(Account, 1)
        assert account is not None
        return account.balance_cents


def charges(db: Database) -> list[str]:
    with db.read() as session:
        query = select(Transaction.order_id).where(Transaction.kind == "CHARGE")
        return sorted(session.exec(query).all())


def announced(db: Database) -> list[events_pb2.PaymentProcessed]:
    """The PaymentProcessed events staged in the outbox, oldest first."""
    with db.read() as session:
        rows = session.exec(
            select(OutboxRecord)
            .where(OutboxRecord.topic == "payments")
            .order_by(col(OutboxRecord.seq))
        ).all()
    return [events_pb2.PaymentProcessed.FromString(r.value or b"") for r in rows]


def test_a_purchase_after_its_deadline_is_declined_and_never_charged(hop: tuple) -> None:
    consumer, db = hop
    start = balance(db)
    consumer.process_batch([purchase(0, "late", utcnow() - timedelta(seconds=1))])
    assert balance(db) == start
    assert charges(db) == []
    [outcome] = announced(db)
    assert outcome.status == events_pb2.PAYMENT_STATUS_DECLINED
    assert outcome.reason == LATE_PURCHASE == "arrived after the saga deadline"
    with db.read() as session:
        payment = session.get(Payment, "late")
        assert payment is not None and (payment.approved, payment.reason) == (False, LATE_PURCHASE)


def test_a_purchase_before_its_deadline_is_charged(hop: tuple) -> None:
    consumer, db = hop
    start = balance(db)
    consumer.process_batch([purchase(0, "in-time", utcnow() + timedelta(seconds=30))])
    assert balance(db) == start - PRICE
    assert charges(db) == ["in-time"]
    [outcome] = announced(db)
    assert outcome.status == events_pb2.PAYMENT_STATUS_APPROVED


def test_a_purchase_without_a_deadline_is_charged_as_before(hop: tuple) -> None:
    """Older producers do not set the field: their purchases are decided by the balance."""
    consumer, db = hop
    start = balance(db)
    consumer.process_batch([purchase(0, "no-deadline", None)])
    assert balance(db) == start - PRICE
    assert charges(db) == ["no-deadline"]


def test_a_late_purchase_does_not_take_the_money_of_a_later_order_in_time(hop: tuple) -> None:
    """After an outage the late order A is declined, so the same user's order B, still in
    time, is charged (it used to be declined for the balance A held until its refund)."""
    consumer, db = hop
    start = balance(db)
    everything = start // PRICE  # orders of PRICE the balance covers
    late = [purchase(i, f"late-{i}", utcnow() - timedelta(seconds=5)) for i in range(everything)]
    in_time = purchase(everything, "in-time", utcnow() + timedelta(seconds=30))
    consumer.process_batch([*late, in_time])
    assert charges(db) == ["in-time"]
    assert balance(db) == start - PRICE


def test_a_redriven_purchase_of_a_failed_order_charges_nothing(hop: tuple) -> None:
    """The order FAILED by its deadline while both its events were dead-lettered: the
    purchase redriven alone (same bytes, so the same deadline) takes no money, and the
    OrderFailed redriven later has nothing to give back."""
    consumer, db = hop
    start = balance(db)
    consumer.process_batch([purchase(0, "failed-order", utcnow() - timedelta(minutes=10))])
    assert (balance(db), charges(db)) == (start, [])
    failed = events_pb2.OrderFailed(
        order_id="failed-order", user_id=1, amount_cents=PRICE, reason="saga deadline passed"
    )
    failed_type = events_pb2.OrderFailed.DESCRIPTOR.full_name
    meta = EventMeta.new(ce_type=failed_type, source=ORDERS.source, subject="failed-order")
    consumer.process_batch([FakeRecord("orders", 0, 1, failed.SerializeToString(), meta.headers())])
    with db.read() as session:
        kinds = session.exec(select(Transaction.kind)).all()
        dead_letters = session.exec(select(OutboxRecord).where(OutboxRecord.topic == "orders.dlt"))
        assert dead_letters.all() == []
    assert (balance(db), kinds) == (start, [])
