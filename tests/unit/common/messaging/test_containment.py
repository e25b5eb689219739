"""Any record a consumer can fetch is applied or dead-lettered, whatever its bytes (Hypothesis).

Generated records (arbitrary header names and values, binary and NUL included, null and
huge keys and values, edge-case ce_time strings, wrong ce_types, valid-looking events with
hostile fields) go through the real consumer mechanism (EventConsumer and BatchApplier, a
real database of each kind; Kafka replaced by in-memory records, as in test_hop) in one
batch, followed by a well-formed record in the same partition. Whatever was generated:
each record is applied or dead-lettered (never both), each dead letter is on its way to
`orders.dlt` with the record's own bytes, the offsets move past all of them, and the
well-formed record is applied.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlmodel import Session, col, select

from paysaga.v1 import events_pb2
from services.common.headers import Headers, header_dict
from services.common.messaging.cloudevents import EventMeta, InvalidEvent
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import REDRIVE_HEADER, DeadLetter, parse_time
from services.common.messaging.journal import TABLES as JOURNAL_TABLES
from services.common.messaging.outbox import (
    DLT_HEADERS,
    OutboxRecord,
    OutboxWriter,
    decode_headers,
    encode_headers,
)
from services.common.messaging.retries import RetryPolicy
from services.common.persistence.db import Database
from services.common.timeutil import to_timestamp, utcnow
from services.saga.topics import ORDERS, PAYMENTS, SAGA_TOPICS
from tests.unit.fakes import FakeConsumer, FakeRecord

pytestmark = pytest.mark.unit

#: An order of this amount breaks the `applied` table's CHECK when the batch is written.
TOO_MUCH = 10_000_000
#: Sizes around the limits that matter: a UUID, an index entry (PostgreSQL: ~2.7 kB), a
#: page, a 2-byte length (a header name), Kafka's default record size (1 MB).
SIZES = (0, 1, 36, 255, 256, 2705, 8200, 65_535, 70_000, 1_000_000)
TIMES = (
    "",
    "not a time",
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+01:00",  # parses; before year 1 in UTC
    "0000-01-01T00:00:00Z",
    "9999-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59-01:00",  # parses; after year 9999 in UTC
    "+10000-01-01T00:00:00Z",
    "1970-01-01T00:00:00Z",
    "2262-04-11T23:47:16.854775807Z",
    "2024-02-30T00:00:00Z",
    "2024-01-01T24:00:00Z",
    "2024-01-01T00:00:00+24:00",
    "2024-01-01T00:00:00\x00Z",
)
INT64 = st.integers(-(2**63), 2**63 - 1)
#: Headers the inbox keys a record by: made unique per generated record.
UNIQUE = ("ce_id", REDRIVE_HEADER)


class Ledger:
    """Stand-in EventBatch for `orders`, as picky as a real handler's tables: a row per
    order in `applied` (the event id unique, the order id indexed, an amount CHECK, the
    order's time as a timestamp) and a PaymentProcessed staged for each."""

    def __init__(self, session: Session, outbox: OutboxWriter, events: Sequence[Message]) -> None:
        self.session = session
        self.outbox = outbox
        self.rows: list[dict[str, Any]] = []

    def apply(self, event: Message, meta: EventMeta) -> None:
        assert isinstance(event, events_pb2.OrderPurchased)
        if event.amount_cents <= 0:
            raise InvalidEvent(f"amount {event.amount_cents} is not positive")
        placed = event.create_time.ToDatetime(tzinfo=UTC)  # raises when out of range
        self.rows.append(
            {
                "event_id": meta.id,
                "order_id": event.order_id,
                "user_id": event.user_id,
                "amount": event.amount_cents,
                "placed": placed,
            }
        )
        paid = events_pb2.PaymentProcessed(
            order_id=event.order_id,
            user_id=event.user_id,
            amount_cents=event.amount_cents,
            status=events_pb2.PAYMENT_STATUS_APPROVED,
        )
        self.outbox.add_event(paid, key=event.user_id, subject=event.order_id)

    def write(self) -> None:
        if self.rows:
            insert = text(
                "INSERT INTO applied (event_id, order_id, user_id, amount, placed)"
                " VALUES (:event_id, :order_id, :user_id, :amount, :placed)"
            )
            self.session.execute(insert, self.rows)


@dataclass
class Hop:
    consumer: EventConsumer
    db: Database
    kafka: FakeConsumer
    #: A new partition per example: examples share the database, never a coordinate.
    partitions: itertools.count[int]


@pytest.fixture
def hop(store_url: str) -> Hop:
    db = Database(store_url)
    db.create_tables([OutboxRecord, ProcessedEvent, *JOURNAL_TABLES])
    serial = "INTEGER" if db.is_sqlite else "SERIAL"
    with db.write() as session:
        session.execute(
            text(
                f"CREATE TABLE applied (seq {serial} PRIMARY KEY, event_id TEXT NOT NULL UNIQUE,"
                " order_id TEXT NOT NULL, user_id BIGINT NOT NULL,"
                f" amount BIGINT NOT NULL CHECK (amount < {TOO_MUCH}),"
                " placed TIMESTAMP WITH TIME ZONE NOT NULL)"
            )
        )
        session.execute(text("CREATE INDEX ix_applied_order ON applied (order_id)"))
    kafka = FakeConsumer()
    consumer = EventConsumer(
        db,
        kafka,  # type: ignore[arg-type]
        {ORDERS.name: Ledger},
        topics=SAGA_TOPICS,
        retry=RetryPolicy(retries=1, backoff_s=0),
    )
    return Hop(consumer, db, kafka, itertools.count())


# -- what to generate ----------------------------------------------------------------------


def _repeat(unit: Any, size: int) -> Any:
    return (unit * (size // len(unit) + 1))[:size]


#: Bytes of any content, short or of a size around a limit.
any_bytes = st.binary(max_size=40) | st.builds(
    _repeat, st.binary(min_size=1, max_size=4), st.sampled_from(SIZES)
)
#: Text of any characters (NUL included), short or of a size around a limit.
any_text = st.text(max_size=40) | st.builds(
    _repeat, st.text(min_size=1, max_size=3), st.sampled_from(SIZES)
)
#: Header names as a Kafka client hands them over: text, up to past the 2-byte length.
header_names = (
    st.sampled_from(["ce_id", "ce_type", "ce_time", "ce_subject", "traceparent", REDRIVE_HEADER])
    | st.sampled_from(DLT_HEADERS)
    | st.text(max_size=20)
    | st.builds(_repeat, st.text(min_size=1, max_size=2), st.sampled_from((255, 70_000)))
)
header_values = st.none() | any_bytes | any_text.map(str.encode)
ce_types = (
    st.sampled_from(
        [
            ORDERS.ce_type,
            PAYMENTS.ce_type,
            "paysaga.v1.Nothing",
            "",
            "paysaga.v1.OrderPurchased\x00",
        ]
    )
    | any_text
).map(str.encode)
ce_times = (st.sampled_from(TIMES) | any_text | st.datetimes().map(lambda d: d.isoformat())).map(
    str.encode
)


def mostly(valid: bytes, hostile: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """The valid value two times in three, else a hostile one."""
    return st.sampled_from([True, True, False]).flatmap(
        lambda keep: st.just(valid) if keep else hostile
    )


@st.composite
def hostile_events(draw: st.DrawFn) -> tuple[bytes, str]:
    """A valid-looking OrderPurchased with hostile fields, serialized; and its order id."""
    order_id = draw(st.just(str(uuid.uuid4())) | any_text)
    stamp = Timestamp(
        seconds=draw(st.integers(-(2**40), 2**40)), nanos=draw(st.integers(-(2**31), 2**31 - 1))
    )
    event = events_pb2.OrderPurchased(
        order_id=order_id,
        user_id=draw(INT64),
        product_id=draw(INT64),
        amount_cents=draw(INT64 | st.just(1000)),
        create_time=stamp,
    )
    return event.SerializeToString(), order_id


@st.composite
def hostile_records(draw: st.DrawFn, seq: int) -> tuple[bytes | None, bytes | None, Headers]:
    """Key, value and headers of one record; its ce_id (and redrive id) unique by `seq`,
    so no two records are one event to the inbox."""
    payload, order_id = draw(hostile_events())
    value = draw(st.just(payload) | st.none() | any_bytes)
    headers: Headers = [
        ("ce_specversion", draw(mostly(b"1.0", header_values))),
        ("ce_id", draw(mostly(str(uuid.uuid4()).encode(), header_values))),
        ("ce_type", draw(mostly(ORDERS.ce_type.encode(), ce_types))),
        ("ce_source", draw(mostly(ORDERS.source.encode(), header_values))),
        ("ce_time", draw(ce_times)),
        ("content-type", draw(mostly(b"application/protobuf", header_values))),
        ("ce_subject", draw(mostly(order_id.encode(), header_values))),
    ]
    dropped = draw(st.sets(st.integers(0, len(headers) - 1), max_size=2))
    headers = [h for i, h in enumerate(headers) if i not in dropped]
    headers += draw(st.lists(st.tuples(header_names, header_values), max_size=4))
    # Unique event ids, however the rest came out: an ASCII prefix survives decoding.
    prefix = f"{seq}-".encode()
    headers = [
        (name, prefix + (v if isinstance(v, bytes) else b"") if name in UNIQUE else v)
        for name, v in headers
    ]
    return draw(st.none() | any_bytes), value, headers


def well_formed(partition: int, offset: int) -> FakeRecord:
    order_id = str(uuid.uuid4())
    meta = EventMeta.new(ce_type=ORDERS.ce_type, source=ORDERS.source, subject=order_id)
    event = events_pb2.OrderPurchased(
        order_id=order_id,
        user_id=1,
        product_id=1,
        amount_cents=1000,
        create_time=to_timestamp(utcnow()),
    )
    return FakeRecord("orders", partition, offset, event.SerializeToString(), meta.headers())


# -- what must hold ------------------------------------------------------------------------


def applied_ids(db: Database) -> set[str]:
    with db.read() as session:
        return set(session.execute(text("SELECT event_id FROM applied")).scalars())


def dead_letters(db: Database, partition: int) -> dict[int, DeadLetter]:
    with db.read() as session:
        query = select(DeadLetter).where(col(DeadLetter.topic) == "orders")
        rows = session.exec(query.where(col(DeadLetter.kafka_partition) == partition))
        return {row.kafka_offset: row for row in rows}


def dlt_records(db: Database, partition: int) -> dict[int, tuple[OutboxRecord, Headers]]:
    """The records on their way to `orders.dlt` from this partition, by original offset."""
    found: dict[int, tuple[OutboxRecord, Headers]] = {}
    with db.read() as session:
        for row in session.exec(
            select(OutboxRecord).where(col(OutboxRecord.topic) == "orders.dlt")
        ):
            headers: Headers = list(decode_headers(row.headers))
            own, dlt = headers[: -len(DLT_HEADERS)], dict(headers[-len(DLT_HEADERS) :])
            if dlt["dlt_partition"] == str(partition).encode():
                found[int(dlt["dlt_offset"] or b"-1")] = (row, own)
    return found


def assert_contained(hop: Hop, records: list[FakeRecord]) -> None:
    """Each record applied or dead-lettered, not both; dead letters byte for byte; the
    offsets past all of them."""
    partition = records[0].partition()
    dead, on_the_way, applied = (
        dead_letters(hop.db, partition),
        dlt_records(hop.db, partition),
        applied_ids(hop.db),
    )
    for record in records:
        offset = record.offset()
        event_id = header_dict(record.headers()).get("ce_id", "")
        was_applied = event_id in applied
        assert (offset in dead) != was_applied, (
            f"offset {offset}: {'both applied and dead-lettered' if was_applied else 'lost'}"
        )
        if offset not in dead:
            continue
        kept = [(k, v) for k, v in record.headers() if k not in DLT_HEADERS]
        row, own = on_the_way[offset]
        assert (row.key, row.value, own) == (record.key(), record.value(), kept)
        letter = dead[offset]
        assert (letter.key, letter.value) == (record.key(), record.value())
        assert decode_headers(letter.headers) == list(record.headers()) or letter.headers == b""
    assert set(on_the_way) == set(dead), "a dead letter without its record for orders.dlt"
    last = records[-1]
    assert hop.kafka.stored[-1] == [("orders", partition, last.offset() + 1)]


@settings(
    max_examples=60,
    database=None,  # nothing written to the working tree; a failure prints its example
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_every_record_is_applied_or_dead_lettered_and_the_partition_moves_on(
    hop: Hop, data: st.DataObject
) -> None:
    partition = next(hop.partitions)
    count = data.draw(st.integers(1, 5), label="hostile records")
    records = []
    for offset in range(count):
        key, value, headers = data.draw(hostile_records(seq=partition * 10 + offset))
        records.append(FakeRecord("orders", partition, offset, value, headers, key))  # type: ignore[arg-type]
    good = well_formed(partition, count)

    hop.consumer.process_batch([*records, good])  # type: ignore[list-item]

    assert_contained(hop, [*records, good])
    assert header_dict(good.headers())["ce_id"] in applied_ids(hop.db)


def test_a_header_name_longer_than_a_two_byte_length_is_kept() -> None:
    """Kafka allows header names of any length; the outbox keeps them byte for byte."""
    headers: Headers = [("n" * 70_000, b"v"), ("short", None), ("é" * 40_000, b"\x00")]
    assert decode_headers(encode_headers(headers)) == headers


@pytest.mark.parametrize(
    ("stamp", "moment"),
    [
        ("2024-01-01T00:00:00+02:00", datetime(2023, 12, 31, 22, tzinfo=UTC)),
        ("2024-01-01T00:00:00Z", datetime(2024, 1, 1, tzinfo=UTC)),
        ("0001-01-01T00:00:00", datetime(1, 1, 1, tzinfo=UTC)),
        ("0001-01-01T00:00:00+01:00", None),  # parses, but before year 1 in UTC
        ("9999-12-31T23:59:59-01:00", None),  # parses, but after year 9999 in UTC
        ("2024-02-30T00:00:00Z", None),
        ("", None),
        ("now", None),
    ],
)
def test_a_ce_time_is_a_moment_any_database_stores_or_none(
    stamp: str, moment: datetime | None
) -> None:
    assert parse_time(stamp) == moment
