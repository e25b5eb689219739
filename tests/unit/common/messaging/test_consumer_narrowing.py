"""A poison event is narrowed down and dead-lettered alone; the database's own trouble never is.

The hop runs over a real database (SQLite, and PostgreSQL in the integration tier) with a
stand-in handler (`Ledger`) whose failures we choose; Kafka is replaced by in-memory
records, as in test_hop.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from google.protobuf.message import Message
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlmodel import Session, col, select

from paysaga.v1 import events_pb2
from services.common.headers import Headers
from services.common.messaging.cloudevents import EventMeta
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import TABLES as JOURNAL_TABLES
from services.common.messaging.outbox import DLT_HEADERS, OutboxRecord, OutboxWriter, decode_headers
from services.common.messaging.retries import RetryPolicy
from services.common.persistence.db import Database, is_transient
from services.common.timeutil import to_timestamp, utcnow
from services.saga.topics import ORDERS, SAGA_TOPICS
from tests.unit.fakes import FakeConsumer, FakeRecord

pytestmark = pytest.mark.unit

#: An order of this amount makes `Ledger.apply` raise (a bug a rare event hits).
BUGGY_AMOUNT = 666
#: An order of this amount breaks the `applied` table's CHECK when the batch is written.
TOO_MUCH = 10_000_000


class DriverError(Exception):
    """A DB-API error as psycopg raises it, with its SQLSTATE."""

    def __init__(self, sqlstate: str | None = None) -> None:
        super().__init__(f"driver error, SQLSTATE {sqlstate}")
        self.sqlstate = sqlstate


def deadlock() -> OperationalError:
    return OperationalError("UPDATE account ...", None, DriverError("40P01"))


class Ledger:
    """Stand-in EventBatch for `orders`: an `applied` row and a PaymentProcessed per order.

    `failures[order_id]` lists exceptions `apply` raises for that order, one per try.
    """

    failures: dict[str, list[Exception]] = {}

    def __init__(self, session: Session, outbox: OutboxWriter, events: Sequence[Message]) -> None:
        self.session = session
        self.outbox = outbox
        self.rows: list[dict[str, Any]] = []

    def apply(self, event: Message, meta: EventMeta) -> None:
        assert isinstance(event, events_pb2.OrderPurchased)
        if self.failures.get(event.order_id):
            raise self.failures[event.order_id].pop(0)
        if event.amount_cents == BUGGY_AMOUNT:
            raise RuntimeError(f"cannot apply {event.order_id}")
        self.rows.append({"order_id": event.order_id, "amount": event.amount_cents})
        outgoing = events_pb2.PaymentProcessed(
            order_id=event.order_id,
            user_id=event.user_id,
            amount_cents=event.amount_cents,
            status=events_pb2.PAYMENT_STATUS_APPROVED,
        )
        self.outbox.add_event(outgoing, key=event.user_id, subject=event.order_id)

    def write(self) -> None:
        if self.rows:
            insert = text("INSERT INTO applied (order_id, amount) VALUES (:order_id, :amount)")
            self.session.execute(insert, self.rows)


@dataclass
class Hop:
    consumer: EventConsumer
    db: Database
    kafka: FakeConsumer


@pytest.fixture
def hop(store_url: str, monkeypatch: pytest.MonkeyPatch) -> Hop:
    db = Database(store_url)
    db.create_tables([OutboxRecord, ProcessedEvent, *JOURNAL_TABLES])
    with db.write() as session:
        session.execute(
            text(
                f"CREATE TABLE applied (seq {'INTEGER' if db.is_sqlite else 'SERIAL'} PRIMARY KEY,"
                f" order_id TEXT NOT NULL, amount INTEGER NOT NULL CHECK (amount < {TOO_MUCH}))"
            )
        )
    monkeypatch.setattr(Ledger, "failures", {})
    kafka = FakeConsumer()
    consumer = EventConsumer(
        db,
        kafka,  # type: ignore[arg-type]
        {ORDERS.name: Ledger},
        topics=SAGA_TOPICS,
        retry=RetryPolicy(backoff_s=0),
    )
    return Hop(consumer, db, kafka)


def order_record(
    partition: int,
    offset: int,
    order_id: str,
    amount: int = 1000,
    *,
    key: bytes | None = b"1",
    more_headers: Headers | None = None,
) -> FakeRecord:
    meta = EventMeta.new(ce_type=ORDERS.ce_type, source=ORDERS.source, subject=order_id)
    event = events_pb2.OrderPurchased(
        order_id=order_id,
        user_id=1,
        product_id=1,
        amount_cents=amount,
        create_time=to_timestamp(utcnow()),
    )
    headers = meta.headers() + (more_headers or [])
    return FakeRecord("orders", partition, offset, event.SerializeToString(), headers, key)


def seven_orders(**amounts: int) -> list[FakeRecord]:
    """order-0 .. order-6 over partitions 0 and 1 (offsets from 10), of the given amounts."""
    return [
        order_record(i % 2, 10 + i // 2, f"order-{i}", amounts.get(f"order_{i}", 1000))
        for i in range(7)
    ]


def applied(db: Database) -> list[str]:
    """Order ids in the order they were applied (a double apply shows twice)."""
    with db.read() as session:
        return list(session.execute(text("SELECT order_id FROM applied ORDER BY seq")).scalars())


def outbox(db: Database) -> list[OutboxRecord]:
    with db.read() as session:
        return list(session.exec(select(OutboxRecord).order_by(col(OutboxRecord.seq))))


def dead_letters(db: Database) -> list[tuple[OutboxRecord, list[tuple[str, bytes | None]]]]:
    return [(r, decode_headers(r.headers)) for r in outbox(db) if r.topic == "orders.dlt"]


def inbox_ids(db: Database) -> set[str]:
    with db.read() as session:
        return set(session.exec(select(ProcessedEvent.event_id)))


def event_id(record: FakeRecord) -> bytes | None:
    return dict(record.headers())["ce_id"]  # type: ignore[return-value]


@pytest.mark.parametrize(
    ("amount", "reason"),
    [
        (BUGGY_AMOUNT, b"RuntimeError: cannot apply order-3"),
        (TOO_MUCH, b"IntegrityError: "),  # the driver's CHECK violation follows
    ],
    ids=["handler-raises", "constraint-at-write"],
)
def test_a_poison_event_is_dead_lettered_alone_and_the_rest_applied_once(
    hop: Hop, amount: int, reason: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    records = seven_orders(order_3=amount)
    caplog.set_level(logging.INFO, logger="services.common.messaging.apply")
    hop.consumer.process_batch(records)  # type: ignore[arg-type]

    # The six others, once each, in consumed order; their events, and one dead letter.
    assert applied(hop.db) == ["order-0", "order-1", "order-2", "order-4", "order-5", "order-6"]
    assert [r.topic for r in outbox(hop.db)].count("payments") == 6
    [(dead, headers)] = dead_letters(hop.db)
    found = dict(headers)
    assert found["dlt_reason"] is not None and found["dlt_reason"].startswith(reason)
    assert (found["dlt_topic"], found["dlt_partition"], found["dlt_offset"]) == (
        b"orders",
        b"1",
        b"11",
    )
    assert (dead.key, dead.value) == (records[3].key(), records[3].value())
    assert found["ce_id"] == event_id(records[3])
    # Every event is in the inbox (the poison one too), and the offsets passed all seven.
    assert inbox_ids(hop.db) == {(event_id(r) or b"").decode() for r in records}
    assert hop.kafka.stored == [[("orders", 0, 14), ("orders", 1, 13)]]
    # The narrowing and the dead letter are logged with the poison's coordinates.
    messages = [r.getMessage() for r in caplog.records]
    assert "part of a batch failed; narrowing it down" in messages
    [logged] = [r for r in caplog.records if r.getMessage() == "event dead-lettered"]
    assert (logged.topic, logged.partition, logged.offset) == ("orders", 1, 11)  # type: ignore[attr-defined]
    assert logged.event_id == (event_id(records[3]) or b"").decode()  # type: ignore[attr-defined]


def test_the_same_batch_redelivered_changes_nothing(hop: Hop) -> None:
    records = seven_orders(order_3=BUGGY_AMOUNT)
    hop.consumer.process_batch(records)  # type: ignore[arg-type]
    before = (applied(hop.db), len(outbox(hop.db)), inbox_ids(hop.db))

    hop.consumer.process_batch(records)  # type: ignore[arg-type]

    assert (applied(hop.db), len(outbox(hop.db)), inbox_ids(hop.db)) == before
    assert len(dead_letters(hop.db)) == 1
    assert hop.kafka.stored[1] == hop.kafka.stored[0]


def test_several_poison_events_keep_the_rest_in_partition_order(hop: Hop) -> None:
    records = seven_orders(order_0=BUGGY_AMOUNT, order_5=TOO_MUCH, order_6=BUGGY_AMOUNT)
    hop.consumer.process_batch(records)  # type: ignore[arg-type]
    assert applied(hop.db) == ["order-1", "order-2", "order-3", "order-4"]
    assert [dict(h)["dlt_offset"] for _, h in dead_letters(hop.db)] == [b"10", b"12", b"13"]
    assert hop.kafka.stored == [[("orders", 0, 14), ("orders", 1, 13)]]


@pytest.mark.parametrize("key", [None, b"\xff\x00\xfe key"], ids=["null-key", "binary-key"])
@pytest.mark.parametrize("poison", ["undecodable", "failing"])
def test_a_dead_letter_is_the_consumed_record_byte_for_byte(
    hop: Hop, key: bytes | None, poison: str
) -> None:
    binary: Headers = [("x-trace", b"\x00\xff\xfe"), ("x-empty", None), ("x-trace", b"\x80")]
    record = order_record(3, 42, "order-x", BUGGY_AMOUNT, key=key, more_headers=binary)
    if poison == "undecodable":
        record._value = b"\xff\x00 not a protobuf"
    hop.consumer.process_batch([record, order_record(3, 43, "order-y")])  # type: ignore[list-item]

    [(dead, headers)] = dead_letters(hop.db)
    assert dead.key == key
    assert dead.value == record.value()
    consumed = list(record.headers())
    assert headers[: len(consumed)] == consumed
    assert tuple(name for name, _ in headers[len(consumed) :]) == DLT_HEADERS
    assert dict(headers[len(consumed) :])["dlt_offset"] == b"42"
    assert applied(hop.db) == ["order-y"]


def test_an_unreachable_database_rewinds_the_batch_and_dead_letters_nothing(
    hop: Hop, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreachable() -> None:
        raise OperationalError("SELECT 1", None, DriverError("08006"))

    monkeypatch.setattr(hop.db, "ping", unreachable)
    records = seven_orders(order_3=BUGGY_AMOUNT)

    assert not hop.consumer.process_or_rewind(records)  # type: ignore[arg-type]
    assert hop.kafka.seeks == [("orders", 0, 10), ("orders", 1, 10)]
    assert (hop.kafka.stored, outbox(hop.db), applied(hop.db)) == ([], [], [])

    monkeypatch.undo()  # the database is back: the poison event is narrowed down now
    assert hop.consumer.process_or_rewind(records)  # type: ignore[arg-type]
    assert len(dead_letters(hop.db)) == 1
    assert len(applied(hop.db)) == 6


def test_a_deadlock_is_retried_not_dead_lettered(hop: Hop) -> None:
    Ledger.failures = {"order-2": [deadlock()], "order-5": [deadlock()]}
    hop.consumer.process_batch(seven_orders())  # type: ignore[arg-type]
    assert applied(hop.db) == [f"order-{i}" for i in range(7)]
    assert dead_letters(hop.db) == []


def test_transient_trouble_that_lasts_rewinds_the_whole_batch(hop: Hop) -> None:
    Ledger.failures = {"order-2": [deadlock() for _ in range(10)]}
    records = seven_orders()
    assert not hop.consumer.process_or_rewind(records)  # type: ignore[arg-type]
    assert hop.kafka.seeks == [("orders", 0, 10), ("orders", 1, 10)]
    assert (hop.kafka.stored, dead_letters(hop.db), applied(hop.db)) == ([], [], [])


def test_a_single_record_is_tried_again_before_it_is_dead_lettered(hop: Hop) -> None:
    Ledger.failures = {"order-0": [RuntimeError("flaky"), RuntimeError("flaky")]}
    hop.consumer.process_batch([order_record(0, 0, "order-0")])  # type: ignore[list-item]
    assert applied(hop.db) == ["order-0"]
    assert dead_letters(hop.db) == []


@pytest.mark.parametrize(
    ("exc", "transient"),
    [
        (OperationalError("", None, DriverError("40001")), True),  # serialization failure
        (deadlock(), True),
        (OperationalError("", None, DriverError("08006")), True),  # connection failure
        (OperationalError("", None, DriverError("57P01")), True),  # admin shutdown
        (DBAPIError("", None, DriverError(), connection_invalidated=True), True),
        (OperationalError("", None, DriverError()), True),  # SQLite: database is locked
        (ConnectionRefusedError(), True),
        (IntegrityError("", None, DriverError("23505")), False),  # unique violation
        (OperationalError("", None, DriverError("54000")), False),  # index row too large
        (DBAPIError("", None, DriverError("22021")), False),  # NUL byte in text
        (IntegrityError("", None, DriverError()), False),  # SQLite: CHECK failed
        (OverflowError("int too large"), False),
        (RuntimeError("bug"), False),
    ],
)
def test_is_transient(exc: Exception, transient: bool) -> None:
    assert is_transient(exc) is transient


def test_a_failed_seek_back_replaces_the_client_so_nothing_is_skipped(hop: Hop) -> None:
    """A client that cannot seek back would fetch on past the failed batch, and the next
    batch would store offsets beyond it: a new client resumes from the committed ones."""

    class NoSeek(FakeConsumer):
        closed = False

        def seek(self, tp: Any) -> None:
            raise RuntimeError("Local: Erroneous state")

        def close(self) -> None:
            self.closed = True

        def subscribe(self, topics: list[str], **_: Any) -> None:
            self.topics = topics

    broken, fresh = NoSeek(), NoSeek()
    hop.consumer.consumer = broken  # type: ignore[assignment]
    hop.consumer.new_consumer = lambda: fresh  # type: ignore[assignment,return-value]
    Ledger.failures = {"order-2": [deadlock() for _ in range(10)]}

    assert not hop.consumer.process_or_rewind(seven_orders())  # type: ignore[arg-type]
    assert broken.closed and hop.consumer.consumer is fresh
    assert fresh.topics == [ORDERS.name]
    assert (broken.stored, fresh.stored, applied(hop.db)) == ([], [], [])
