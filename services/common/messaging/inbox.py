"""The inbox: ids of the events already applied, so a redelivered event changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlmodel import Field, SQLModel

from services.common.persistence.bulk import BulkInsert
from services.common.persistence.transaction import Transaction
from services.common.timeutil import utcnow


class ProcessedEvent(SQLModel, table=True):
    """An event id this service has applied (or dead-lettered), with where it came from."""

    __tablename__ = "inbox"

    event_id: str = Field(primary_key=True)
    topic: str
    #: Indexed: the retention purge (services.common.operations.retention) deletes by age.
    processed_at: datetime = Field(default_factory=utcnow, index=True)


_INSERT_NEW = BulkInsert(
    ProcessedEvent.__table__,  # type: ignore[attr-defined]
    ("event_id", "topic", "processed_at"),
    ignore_conflicts_on=("event_id",),
    returning="event_id",
)


def record_new(session: Transaction, events: Sequence[tuple[str, str]]) -> set[str]:
    """Record the (event id, topic) pairs not seen before; return their ids.

    One INSERT ... ON CONFLICT DO NOTHING for the whole batch: the database decides what
    is new, so two replicas handed the same event (during a rebalance) cannot both apply
    it: the second waits for the first's commit and finds the id taken. An id that appears
    twice in `events` is returned once: the caller applies its first copy only.
    """
    new = dict(events)
    if not new:
        return set()
    now = utcnow()
    rows = [{"event_id": i, "topic": t, "processed_at": now} for i, t in new.items()]
    return set(_INSERT_NEW.execute(session, rows))
