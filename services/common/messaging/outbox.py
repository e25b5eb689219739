"""The outbox: Kafka records to publish, written in the transaction of the change they announce.

A transaction collects its outgoing records in an `OutboxWriter` and writes them with one
INSERT at the end; the relay is woken once that transaction has committed. Keys, values
and header values are stored as bytes, exactly as they go on the wire (a dead letter is
the consumed record byte for byte: a binary key or header, or a null key, survives).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from google.protobuf.message import Message
from sqlalchemy import Table
from sqlmodel import Field, SQLModel

from services.common.headers import Headers, header_dict
from services.common.messaging.cloudevents import EventMeta
from services.common.messaging.journal import Journal, StepKind, parse_time
from services.common.messaging.topics import Topic, TopicTable
from services.common.observability import tracing
from services.common.persistence.bulk import BulkInsert
from services.common.persistence.columns import blob, int64
from services.common.persistence.db import run_after_commit
from services.common.persistence.transaction import Transaction
from services.common.timeutil import utcnow

#: Headers a dead letter carries on top of the consumed record's own.
DLT_HEADERS = ("dlt_reason", "dlt_topic", "dlt_partition", "dlt_offset", "dlt_time")

#: A dead letter's reason is cut to this length (an exception text can be long).
MAX_REASON_CHARS = 2000

_NAME_LEN = struct.Struct(">H")
_VALUE_LEN = struct.Struct(">I")
_NULL = 0xFFFFFFFF
_LONG_NAME = 0xFFFF


def encode_headers(headers: Headers) -> bytes:
    """Kafka headers as bytes: per header a 2-byte name length, the UTF-8 name, a 4-byte
    value length (all ones for a null value) and the value, in order (names may repeat).
    A name of 65535 bytes or more (Kafka allows it) has all ones, then a 4-byte length."""
    out = bytearray()
    for name, value in headers:
        raw_name = name.encode()
        if len(raw_name) < _LONG_NAME:
            out += _NAME_LEN.pack(len(raw_name)) + raw_name
        else:
            out += _NAME_LEN.pack(_LONG_NAME) + _VALUE_LEN.pack(len(raw_name)) + raw_name
        if value is None:
            out += _VALUE_LEN.pack(_NULL)
            continue
        raw = value.encode() if isinstance(value, str) else value
        out += _VALUE_LEN.pack(len(raw)) + raw
    return bytes(out)


def decode_headers(data: bytes) -> list[tuple[str, bytes | None]]:
    """The headers `encode_headers` wrote, in order."""
    headers: list[tuple[str, bytes | None]] = []
    at = 0
    while at < len(data):
        (name_len,) = _NAME_LEN.unpack_from(data, at)
        at += _NAME_LEN.size
        if name_len == _LONG_NAME:
            (name_len,) = _VALUE_LEN.unpack_from(data, at)
            at += _VALUE_LEN.size
        name = data[at : at + name_len].decode()
        at += name_len
        (value_len,) = _VALUE_LEN.unpack_from(data, at)
        at += _VALUE_LEN.size
        if value_len == _NULL:
            headers.append((name, None))
            continue
        headers.append((name, data[at : at + value_len]))
        at += value_len
    return headers


def dead_letter_headers(
    headers: Headers, *, reason: str, topic: str, partition: int, offset: int
) -> Headers:
    """A consumed record's headers as its dead letter carries them: its own (less any
    dlt_* ones) and the dlt_* headers saying why and where it came from."""
    dead_headers = [h for h in headers if h[0] not in DLT_HEADERS]
    dead_headers += [
        ("dlt_reason", reason[:MAX_REASON_CHARS].encode()),
        ("dlt_topic", topic.encode()),
        ("dlt_partition", str(partition).encode()),
        ("dlt_offset", str(offset).encode()),
        ("dlt_time", utcnow().isoformat().encode()),
    ]
    return dead_headers


class OutboxRecord(SQLModel, table=True):
    """One Kafka record waiting to be published; deleted once the broker confirmed it."""

    __tablename__ = "outbox"
    # Never reuse a seq, even after every row was deleted: the relay keeps its place by seq.
    __table_args__ = {"sqlite_autoincrement": True}

    #: Publication order.
    seq: int | None = int64(default=None, primary_key=True)
    event_id: str = Field(index=True)
    topic: str
    key: bytes | None = blob(default=None, nullable=True)
    value: bytes | None = blob(default=None, nullable=True)
    #: Kafka headers, see encode_headers.
    headers: bytes = blob()
    created_at: datetime = Field(default_factory=utcnow)
    #: Failed publication attempts so far, and the last error.
    attempts: int = 0
    last_error: str = ""
    #: The relay that leased this row to publish it, and until when (PostgreSQL: see
    #: services.common.messaging.claims; null: nobody holds it).
    claimed_by: str | None = None
    claimed_until: datetime | None = None


#: The outbox table, for Core statements on the hot path (an ORM insert costs far more).
OUTBOX_TABLE: Table = OutboxRecord.__table__  # type: ignore[attr-defined]
_INSERT_OUTBOX = BulkInsert(
    OUTBOX_TABLE,
    ("event_id", "topic", "key", "value", "headers", "created_at", "attempts", "last_error"),
)


class ClaimedRow(NamedTuple):
    """An outbox row as a relay reads it to publish it (services.common.messaging.claims)."""

    seq: int
    event_id: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: bytes
    created_at: datetime
    attempts: int


class ParkedRecord(SQLModel, table=True):
    """An outbox row Kafka refused for good (or too often): set aside so the rest flows on.

    An operator reads the error, fixes the cause and puts the row back in the outbox.
    """

    __tablename__ = "outbox_parked"

    seq: int = int64(primary_key=True)
    event_id: str = Field(index=True)
    topic: str
    key: bytes | None = blob(default=None, nullable=True)
    value: bytes | None = blob(default=None, nullable=True)
    headers: bytes = blob()
    created_at: datetime
    attempts: int
    error: str
    parked_at: datetime = Field(default_factory=utcnow)


def _no_topic_table(event: Message) -> Topic:
    raise TypeError(f"cannot stage a {type(event).__name__}: this OutboxWriter has no topic table")


def _no_description(event: Message) -> str:
    return ""


class OutboxWriter:
    """The outgoing records of one transaction, in order; `write` inserts them all.

    `topics` says which topic each event of `add_event` goes on and how the journal
    describes it; a writer given None stages records as they are only (a redrive). It
    also carries the transaction's saga journal (messaging.journal): a staged event is a
    PRODUCED step of its order, and the consumer adds what it applied.
    """

    def __init__(self, topics: TopicTable | None) -> None:
        self.rows: list[dict[str, Any]] = []
        self._created_at: datetime | None = None
        self.journal = Journal()
        self._topic_for: Callable[[Message], Topic] = (
            topics.for_event if topics is not None else _no_topic_table
        )
        self._describe: Callable[[Message], str] = (
            topics.describe if topics is not None else _no_description
        )

    def _add(
        self, *, event_id: str, topic: str, key: bytes | None, value: bytes | None, headers: Headers
    ) -> None:
        if self._created_at is None:  # one moment for the rows of one transaction
            self._created_at = utcnow()
        self.rows.append(
            {
                "event_id": event_id,
                "topic": topic,
                "key": key,
                "value": value,
                "headers": encode_headers(headers),
                "created_at": self._created_at,
                "attempts": 0,
                "last_error": "",
            }
        )

    def add_event(
        self,
        event: Message,
        *,
        key: int | str,
        subject: str = "",
        trace: Sequence[tuple[str, bytes]] | None = None,
    ) -> EventMeta:
        """Stage `event` for publication on its topic, keyed by `key`.

        The record carries the trace context `trace` (headers from
        tracing.current_headers), by default the current one: the span it was created in.
        """
        topic = self._topic_for(event)
        meta = EventMeta.new(
            ce_type=event.DESCRIPTOR.full_name, source=topic.source, subject=subject
        )
        self._add(
            event_id=meta.id,
            topic=topic.name,
            key=str(key).encode(),
            value=event.SerializeToString(),
            headers=[*meta.headers(), *(tracing.current_headers() if trace is None else trace)],
        )
        self.journal.step(
            StepKind.PRODUCED,
            order_id=subject,
            topic=topic.name,
            event_id=meta.id,
            event_type=meta.type,
            detail=self._describe(event),
        )
        return meta

    def add_record(
        self,
        *,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        event_id: str,
    ) -> None:
        """Stage a record as it is (a redriven dead letter) for `topic`."""
        self._add(event_id=event_id, topic=topic, key=key, value=value, headers=headers)

    def add_dead_letter(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        reason: str,
        event_id: str,
    ) -> None:
        """Stage the consumed record, byte for byte, for `<topic>.dlt`, with dlt_* headers."""
        dead_headers = dead_letter_headers(
            headers, reason=reason, topic=topic, partition=partition, offset=offset
        )
        self._add(
            event_id=event_id, topic=f"{topic}.dlt", key=key, value=value, headers=dead_headers
        )
        found = header_dict(headers)
        # The event's own id where it has one (the inbox key may be a redrive id or the
        # record's coordinates).
        original_id = found.get("ce_id") or event_id
        self.journal.dead_letter(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            headers=encode_headers(headers),
            reason=reason[:MAX_REASON_CHARS],
            event_id=original_id,
            event_type=found.get("ce_type", ""),
            order_id=found.get("ce_subject", ""),
        )
        self.journal.step(
            StepKind.DEAD_LETTERED,
            order_id=found.get("ce_subject", ""),
            topic=topic,
            event_id=original_id,
            event_type=found.get("ce_type", ""),
            detail=reason,
            partition=partition,
            offset=offset,
            produced_at=parse_time(found.get("ce_time", "")),
        )

    def write(self, session: Transaction) -> None:
        """Insert the staged records and journal in this transaction; wake the relay once it
        commits."""
        self.journal.write(session)
        if not self.rows:
            return
        _INSERT_OUTBOX.execute(session, self.rows)
        self.rows = []
        signal = session.info.get("outbox_signal")
        if signal is not None:
            run_after_commit(session, signal.set)
