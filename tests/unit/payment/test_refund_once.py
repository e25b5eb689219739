"""A FAILED order's charge is given back once, however many OrderFailed reach the Payment
service under new event ids (the Order service announces it again while the money is held).

The real hop (inbox, handler, outbox) on each database kind; Kafka is replaced by in-memory
records.
"""

from __future__ import annotations

import pytest
from sqlmodel import col, select

from paysaga.v1 import events_pb2, payments_pb2
from services.common.messaging.cloudevents import EventMeta
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import TABLES as JOURNAL_TABLES
from services.common.messaging.outbox import OutboxRecord
from services.common.persistence.db import Database
from services.common.timeutil import to_timestamp, utcnow
from services.payment.handlers import ChargeOrders
from services.payment.models import REFUND, Account, Payment, Transaction
from services.payment.store import seed_accounts
from services.saga.topics import ORDERS, SAGA_TOPICS
from tests.unit.fakes import FakeConsumer, FakeRecord

pytestmark = pytest.mark.unit

PRICE = 5000
ORDER_ID = "order-held-1"


@pytest.fixture
def hop(store_url: str) -> tuple[EventConsumer, Database]:
    db = Database(store_url)
    db.create_tables([Account, Payment, Transaction, OutboxRecord, ProcessedEvent, *JOURNAL_TABLES])
    seed_accounts(db)
    consumer = EventConsumer(db, FakeConsumer(), {ORDERS.name: ChargeOrders}, topics=SAGA_TOPICS)  # type: ignore[arg-type]
    return consumer, db


def record(offset: int, event: events_pb2.OrderPurchased | events_pb2.OrderFailed) -> FakeRecord:
    """`event` of ORDER_ID on `orders` under a new event id."""
    meta = EventMeta.new(ce_type=event.DESCRIPTOR.full_name, source=ORDERS.source, subject=ORDER_ID)
    return FakeRecord("orders", 0, offset, event.SerializeToString(), meta.headers())


def purchased() -> events_pb2.OrderPurchased:
    return events_pb2.OrderPurchased(
        order_id=ORDER_ID,
        user_id=1,
        product_id=1,
        amount_cents=PRICE,
        create_time=to_timestamp(utcnow()),
    )


def failed() -> events_pb2.OrderFailed:
    return events_pb2.OrderFailed(
        order_id=ORDER_ID,
        user_id=1,
        amount_cents=PRICE,
        reason="saga deadline passed",
        fail_time=to_timestamp(utcnow()),
    )


def balance(db: Database) -> int:
    with db.read() as session:
        account = session.get(Account, 1)
        assert account is not None
        return account.balance_cents


def refunds_announced(db: Database) -> list[str]:
    """The transaction ids of the REFUND announcements staged, in order."""
    with db.read() as session:
        rows = session.exec(
            select(OutboxRecord).where(col(OutboxRecord.topic) == "transactions")
        ).all()
    found = [events_pb2.TransactionRecorded.FromString(row.value or b"") for row in rows]
    return [e.transaction_id for e in found if e.kind == payments_pb2.TRANSACTION_KIND_REFUND]


def test_repeated_order_failed_refunds_once(hop: tuple[EventConsumer, Database]) -> None:
    consumer, db = hop
    start = balance(db)
    consumer.process_batch([record(0, purchased())])  # type: ignore[list-item]
    assert balance(db) == start - PRICE
    # The first OrderFailed, then two more in one batch and one in a later batch: each
    # under its own event id, so the inbox lets every one of them through to the handler.
    consumer.process_batch([record(1, failed())])  # type: ignore[list-item]
    consumer.process_batch([record(2, failed()), record(3, failed())])  # type: ignore[list-item]
    consumer.process_batch([record(4, failed())])  # type: ignore[list-item]
    assert balance(db) == start
    with db.read() as session:
        assert len(session.exec(select(ProcessedEvent)).all()) == 5, "every event applied"
        kinds = [t.kind for t in session.exec(select(Transaction))]
        payment = session.get(Payment, ORDER_ID)
    assert sorted(kinds) == ["CHARGE", REFUND]
    assert payment is not None and payment.refunded_at is not None
    # One refund; each later batch that asks again hears of that same refund once, so an
    # Order service whose first copy was lost learns of it (and stops asking).
    announced = refunds_announced(db)
    assert len(set(announced)) == 1 and len(announced) == 3


def test_order_failed_twice_in_the_batch_of_the_charge_refunds_once(
    hop: tuple[EventConsumer, Database],
) -> None:
    consumer, db = hop
    start = balance(db)
    consumer.process_batch([record(0, purchased()), record(1, failed()), record(2, failed())])  # type: ignore[list-item]
    assert balance(db) == start
    with db.read() as session:
        kinds = [t.kind for t in session.exec(select(Transaction))]
    assert sorted(kinds) == ["CHARGE", REFUND]
    assert len(refunds_announced(db)) == 1
