"""One hop (decode -> inbox -> handler -> outbox -> offsets stored) over a real SQLite file.

Kafka is replaced by in-memory records here; the integration tests run the same loop
against the real broker.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlmodel import col, select

from paysaga.v1 import events_pb2
from services.common.messaging.cloudevents import EventMeta
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import TABLES as JOURNAL_TABLES
from services.common.messaging.outbox import OutboxRecord, decode_headers
from services.common.persistence.db import Database
from services.common.timeutil import to_timestamp, utcnow
from services.payment.handlers import ChargeOrders
from services.payment.models import Account, Payment, Transaction
from services.payment.store import seed_accounts
from services.saga.topics import ORDERS, SAGA_TOPICS
from tests.unit.fakes import FakeConsumer, FakeRecord

pytestmark = pytest.mark.unit


@pytest.fixture
def hop(store_url: str) -> tuple[EventConsumer, Database, FakeConsumer]:
    db = Database(store_url)
    db.create_tables([Account, Payment, Transaction, OutboxRecord, ProcessedEvent, *JOURNAL_TABLES])
    seed_accounts(db)
    consumer = FakeConsumer()
    hop = EventConsumer(db, consumer, {ORDERS.name: ChargeOrders}, topics=SAGA_TOPICS)  # type: ignore[arg-type]
    return hop, db, consumer


def order_record(offset: int, order_id: str, amount: int, event_id: str = "") -> FakeRecord:
    meta = EventMeta.new(ce_type=ORDERS.ce_type, source=ORDERS.source, subject=order_id)
    if event_id:
        meta = EventMeta(event_id, meta.type, meta.source, meta.time, meta.subject)
    event = events_pb2.OrderPurchased(
        order_id=order_id,
        user_id=1,
        product_id=1,
        amount_cents=amount,
        create_time=to_timestamp(utcnow()),
    )
    return FakeRecord("orders", 0, offset, event.SerializeToString(), meta.headers())


def balance(db: Database) -> int:
    with db.read() as session:
        account = session.get(Account, 1)
        assert account is not None
        return account.balance_cents


def outbox_topics(db: Database) -> list[str]:
    with db.read() as session:
        return [r.topic for r in session.exec(select(OutboxRecord).order_by(col(OutboxRecord.seq)))]


def dead_letter(db: Database) -> tuple[OutboxRecord, dict[str, bytes | None]]:
    """The one dead letter in the outbox, and its headers."""
    with db.read() as session:
        dead = session.exec(select(OutboxRecord).where(OutboxRecord.topic == "orders.dlt")).one()
    return dead, dict(decode_headers(dead.headers))


def test_event_applied_once_even_when_delivered_twice(hop: Any) -> None:
    consumer, db, kafka = hop
    record = order_record(0, "order-a", 5000, event_id="evt-1")
    consumer.process_batch([record])
    consumer.process_batch([order_record(1, "order-a", 5000, event_id="evt-1")])
    assert balance(db) == 5000
    assert outbox_topics(db) == ["payments"]
    assert kafka.stored == [[("orders", 0, 1)], [("orders", 0, 2)]]


def test_same_order_under_a_new_event_id_is_not_charged_twice(hop: Any) -> None:
    consumer, db, _ = hop
    consumer.process_batch([order_record(0, "order-a", 5000), order_record(1, "order-a", 5000)])
    assert balance(db) == 5000
    assert outbox_topics(db) == ["payments"]


def test_poison_is_dead_lettered_and_the_batch_goes_on(hop: Any) -> None:
    consumer, db, kafka = hop
    garbage = FakeRecord("orders", 0, 1, b"\xff\x00garbage", [("x-trace", b"\x00\xfe")], None)
    consumer.process_batch(
        [order_record(0, "order-a", 3000), garbage, order_record(2, "order-b", 2000)]
    )
    assert balance(db) == 5000
    assert outbox_topics(db) == ["payments", "orders.dlt", "payments"]
    dead, headers = dead_letter(db)
    assert headers["dlt_reason"] is not None
    assert headers["dlt_reason"].startswith(b"missing CloudEvents header")
    assert (headers["dlt_topic"], headers["dlt_partition"], headers["dlt_offset"]) == (
        b"orders",
        b"0",
        b"1",
    )
    assert headers["x-trace"] == b"\x00\xfe"
    assert (dead.key, dead.value) == (None, b"\xff\x00garbage")
    assert kafka.stored == [[("orders", 0, 3)]]


def test_invalid_event_rolls_back_only_itself(hop: Any) -> None:
    consumer, db, _ = hop
    consumer.process_batch([order_record(0, "order-a", -5), order_record(1, "order-b", 1000)])
    assert balance(db) == 9000
    dead, headers = dead_letter(db)
    assert headers["dlt_reason"] == b"amount_cents must be positive, got -5"
    assert headers["dlt_offset"] == b"0"
    assert headers["ce_type"] == ORDERS.ce_type.encode()  # the consumed headers are kept
    assert dead.key == b"1"


def test_balance_never_goes_negative(hop: Any) -> None:
    consumer, db, _ = hop
    consumer.process_batch([order_record(i, f"order-{i}", 3000) for i in range(5)])
    assert balance(db) == 1000
    with db.read() as session:
        approved = session.exec(select(Payment).where(Payment.approved == True)).all()  # noqa: E712
    assert len(approved) == 3


def test_another_events_bytes_under_order_purchased_headers_charge_nothing(hop: Any) -> None:
    consumer, db, _ = hop
    lying = events_pb2.PaymentProcessed(
        order_id="order-x", user_id=1, amount_cents=5000, status=events_pb2.PAYMENT_STATUS_APPROVED
    )
    meta = EventMeta.new(ce_type=ORDERS.ce_type, source=ORDERS.source, subject="order-x")
    consumer.process_batch([FakeRecord("orders", 0, 0, lying.SerializeToString(), meta.headers())])
    assert balance(db) == 10000
    assert outbox_topics(db) == ["orders.dlt"]
