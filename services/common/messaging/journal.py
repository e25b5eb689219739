"""The saga journal: durable steps of each order's saga and the dead letters, for operators.

Each step is written in the transaction of the work it describes (an event staged in the
outbox, a consumed event applied or dead-lettered, a dead letter redriven), so the journal
never claims what did not commit, survives restarts and outlives the outbox row and the
topic's retention. A transaction collects its steps in a `Journal` (OutboxWriter holds
one) and writes them with one multi-row INSERT per table at its end: the relay and the
consumer stay one statement per batch, never an ORM object per event.

Where a record went is known on the consumer side: an APPLIED or DEAD_LETTERED step holds
the record's topic, partition and offset; a PRODUCED step holds the event id, which the
consumer's step repeats, so a timeline joins the two. (The relay learns a record's offset
only from the delivery report; writing it back would cost an UPDATE per row on the hot path.)
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Table
from sqlmodel import Field, Index, SQLModel

from services.common.messaging.cloudevents import EventMeta
from services.common.persistence.bulk import BulkInsert
from services.common.persistence.columns import blob, int64
from services.common.persistence.db import insert_ignoring_conflicts
from services.common.persistence.transaction import Transaction
from services.common.timeutil import utcnow

#: The header a redriven record carries: its inbox key on the way back (see redrive_id).
REDRIVE_HEADER = "paysaga_redrive_id"

#: The longest text a journal row keeps, and the longest order id (an indexed column:
#: PostgreSQL refuses an index entry over about 2.7 kB; real order ids are UUIDs).
MAX_TEXT_CHARS = 2000
MAX_ORDER_ID_CHARS = 255


class StepKind(StrEnum):
    PRODUCED = "PRODUCED"
    APPLIED = "APPLIED"
    DEAD_LETTERED = "DEAD_LETTERED"
    REDRIVEN = "REDRIVEN"


class SagaStep(SQLModel, table=True):
    """One step of an order's saga as this service saw it (see the module docstring)."""

    __tablename__ = "saga_step"
    __table_args__ = (Index("ix_saga_step_order", "order_id", "recorded_at"),)

    id: int | None = int64(default=None, primary_key=True)
    order_id: str
    kind: str
    topic: str
    #: The consumed record's partition and offset (None for PRODUCED and REDRIVEN).
    kafka_partition: int | None = None
    kafka_offset: int | None = int64(default=None, nullable=True)
    event_id: str
    event_type: str
    #: The event's ce_time, when the step is about a consumed event.
    produced_at: datetime | None = None
    recorded_at: datetime
    #: The replica (instance id) that wrote the step.
    replica: str
    #: A short summary: a status, an outcome, a dead-letter reason, who redrove.
    detail: str


class DeadLetter(SQLModel, table=True):
    """A consumed record this service could not apply, byte for byte (also on `<topic>.dlt`).

    Its id is the original record's coordinates, `<topic>:<partition>:<offset>`: unique,
    readable, and the root of its redrive id.
    """

    __tablename__ = "dead_letter"

    id: str = Field(primary_key=True)
    topic: str
    kafka_partition: int
    kafka_offset: int = int64()
    event_id: str
    event_type: str
    order_id: str = Field(index=True)
    reason: str
    key: bytes | None = blob(default=None, nullable=True)
    value: bytes | None = blob(default=None, nullable=True)
    #: Kafka headers as consumed (services.common.messaging.outbox.encode_headers).
    headers: bytes = blob()
    dead_lettered_at: datetime = Field(index=True)
    redrive_count: int = 0
    redriven_at: datetime | None = None
    redriven_by: str = ""


class Redrive(SQLModel, table=True):
    """A dead letter sent back to its topic: what, when and by whom."""

    __tablename__ = "dead_letter_redrive"

    id: int | None = int64(default=None, primary_key=True)
    dead_letter_id: str = Field(index=True)
    redrive_id: str
    redriven_at: datetime
    redriven_by: str


#: The journal's tables (unit tests create them directly; services migrate).
TABLES: list[type[SQLModel]] = [SagaStep, DeadLetter, Redrive]

STEPS_TABLE: Table = SagaStep.__table__  # type: ignore[attr-defined]
_INSERT_STEPS = BulkInsert(STEPS_TABLE, [c.name for c in STEPS_TABLE.columns if c.name != "id"])
DEAD_LETTERS_TABLE: Table = DeadLetter.__table__  # type: ignore[attr-defined]


def dead_letter_id(topic: str, partition: int, offset: int) -> str:
    return f"{topic}:{partition}:{offset}"


def redrive_id(dead_letter: str) -> str:
    """The inbox key of a redriven dead letter: the same for every redrive of it.

    The original event id is already in the inbox (recorded when it was dead-lettered), so
    the redriven copy needs a key of its own; derived from the dead letter's id, redriving
    it twice sends two records with one key, and the consumer applies the first only.
    """
    return f"redrive:{dead_letter}"


def parse_time(text: str) -> datetime | None:
    """A ce_time (ISO 8601, `Z` allowed) as an aware UTC datetime, or None if it is not one
    a database can store (unparseable, or out of range once in UTC: `0001-01-01T00:00+01:00`
    parses, but is a moment before year 1)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


class Journal:
    """The steps and dead letters of one transaction; `write` inserts them at its end."""

    def __init__(self) -> None:
        self.steps: list[dict[str, Any]] = []
        self.dead_letters: list[dict[str, Any]] = []

    def step(
        self,
        kind: StepKind,
        *,
        order_id: str,
        topic: str,
        event_id: str,
        event_type: str,
        detail: str = "",
        partition: int | None = None,
        offset: int | None = None,
        produced_at: datetime | None = None,
        at: datetime | None = None,
    ) -> None:
        if not order_id:
            return  # a step belongs to an order's timeline; without one there is none
        self.steps.append(
            {
                "order_id": order_id,
                "kind": kind.value,
                "topic": topic,
                "kafka_partition": partition,
                "kafka_offset": offset,
                "event_id": event_id,
                "event_type": event_type,
                "produced_at": produced_at,
                "recorded_at": at or utcnow(),
                "detail": detail[:500],
            }
        )

    def consumed(
        self,
        kind: StepKind,
        *,
        topic: str,
        partition: int,
        offset: int,
        meta: EventMeta,
        detail: str,
        at: datetime | None = None,
    ) -> None:
        """A consumed event was applied or dead-lettered (`at`: when its handling began, so
        it sorts before the events its handler produced)."""
        self.step(
            kind,
            order_id=meta.subject,
            topic=topic,
            event_id=meta.id,
            event_type=meta.type,
            detail=detail,
            partition=partition,
            offset=offset,
            produced_at=parse_time(meta.time),
            at=at,
        )

    def dead_letter(
        self,
        *,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: bytes,
        reason: str,
        event_id: str,
        event_type: str,
        order_id: str,
    ) -> None:
        self.dead_letters.append(
            {
                "id": dead_letter_id(topic, partition, offset),
                "topic": topic,
                "kafka_partition": partition,
                "kafka_offset": offset,
                "event_id": event_id,
                "event_type": event_type,
                "order_id": order_id,
                "reason": reason,
                "key": key,
                "value": value,
                "headers": headers,
                "dead_lettered_at": utcnow(),
                "redrive_count": 0,
                "redriven_at": None,
                "redriven_by": "",
            }
        )

    def write(self, session: Transaction) -> None:
        """Insert what was collected, in the caller's transaction (one INSERT per table)."""
        if self.steps:
            replica = str(session.info.get("replica", ""))
            for step in self.steps:
                step["replica"] = replica
                _storable(step)
            _INSERT_STEPS.execute(session, self.steps)
            self.steps = []
        if self.dead_letters:
            # A redelivered poison record is stopped by the inbox first; this only makes sure.
            session.execute(
                insert_ignoring_conflicts(session, DEAD_LETTERS_TABLE, "id"),
                [_storable(row) for row in self.dead_letters],
            )
            self.dead_letters = []


def storable_text(text: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Any text (an exception's, say) as any database column and Kafka header takes it:
    what UTF-8 cannot encode and NUL characters escaped, cut to `limit` characters."""
    text = text[: limit * 4].encode("utf-8", "backslashreplace").decode("utf-8")
    return text.replace("\x00", "\\x00")[:limit]


def _storable(row: dict[str, Any]) -> dict[str, Any]:
    """The row, its NUL characters in texts escaped (PostgreSQL text refuses them) and its
    texts cut to MAX_TEXT_CHARS, its order id to MAX_ORDER_ID_CHARS: a poison record's
    order id or reason may hold anything, and the journal must never be what stops a dead
    letter from being written, nor an event from being applied. (Texts come from decoded
    headers and protobuf strings: valid Unicode.) Changed in place: only the rare text that
    needs it is copied."""
    for key, value in row.items():
        if isinstance(value, str):
            limit = MAX_ORDER_ID_CHARS if key == "order_id" else MAX_TEXT_CHARS
            if len(value) > limit or "\x00" in value:
                row[key] = value.replace("\x00", "\\x00")[:limit]
    return row
