"""The inbox: ids of the events already applied, so a redelivered event changes nothing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import insert
from sqlmodel import Field, Session, SQLModel, col, select

from services.common.timeutil import utcnow


class ProcessedEvent(SQLModel, table=True):
    """An event id this service has applied (or dead-lettered), with where it came from."""

    __tablename__ = "inbox"

    event_id: str = Field(primary_key=True)
    topic: str
    processed_at: datetime = Field(default_factory=utcnow)


def record_new(session: Session, events: Sequence[tuple[str, str]]) -> set[str]:
    """Record the (event id, topic) pairs not seen before; return their ids.

    One query for the whole batch. An id that appears twice in `events` is returned
    once: the caller applies its first copy and treats the next as a duplicate.
    """
    ids = {event_id for event_id, _ in events}
    seen = set(
        session.exec(select(ProcessedEvent.event_id).where(col(ProcessedEvent.event_id).in_(ids)))
    )
    new = {event_id: topic for event_id, topic in events if event_id not in seen}
    if new:
        now = utcnow()
        session.execute(
            insert(ProcessedEvent),
            [{"event_id": i, "topic": t, "processed_at": now} for i, t in new.items()],
        )
    return set(new)
