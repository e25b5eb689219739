"""The inbox: ids of the events already applied, so a redelivered event changes nothing."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, Session, SQLModel, select

from services.common.timeutil import utcnow


class ProcessedEvent(SQLModel, table=True):
    """An event id this service has applied (or dead-lettered), with where it came from."""

    __tablename__ = "inbox"

    event_id: str = Field(primary_key=True)
    topic: str
    processed_at: datetime = Field(default_factory=utcnow)


def first_delivery(session: Session, *, event_id: str, topic: str) -> bool:
    """Record `event_id` in this transaction; False if it was recorded before."""
    seen = session.exec(select(ProcessedEvent.event_id).where(ProcessedEvent.event_id == event_id))
    if seen.first() is not None:
        return False
    session.add(ProcessedEvent(event_id=event_id, topic=topic))
    session.flush()
    return True
