"""The outbox: events to publish, written in the same transaction as the change they announce."""

from __future__ import annotations

import json
from datetime import datetime

from google.protobuf.message import Message
from sqlmodel import Field, Session, SQLModel

from services.common.cloudevents import EventMeta, Headers, header_text
from services.common.db import run_after_commit
from services.common.timeutil import utcnow
from services.common.topics import topic_for_event


class OutboxRecord(SQLModel, table=True):
    """One Kafka record waiting to be published; deleted once the broker confirmed it."""

    __tablename__ = "outbox"

    #: Publication order.
    seq: int | None = Field(default=None, primary_key=True)
    event_id: str = Field(index=True)
    topic: str
    key: str
    value: bytes
    #: Kafka headers as a JSON list of [name, text] pairs.
    headers_json: str
    created_at: datetime = Field(default_factory=utcnow)

    def headers(self) -> Headers:
        return [(name, text.encode()) for name, text in json.loads(self.headers_json)]


def _add(
    session: Session, *, event_id: str, topic: str, key: str, value: bytes, headers: Headers
) -> OutboxRecord:
    record = OutboxRecord(
        event_id=event_id,
        topic=topic,
        key=key,
        value=value,
        headers_json=json.dumps([[k, header_text(v)] for k, v in headers]),
    )
    session.add(record)
    signal = session.info.get("outbox_signal")
    if signal is not None:
        run_after_commit(session, signal.set)
    return record


def add_event(session: Session, event: Message, *, key: int | str, subject: str = "") -> EventMeta:
    """Stage `event` for publication on its topic once this transaction commits."""
    topic = topic_for_event(event)
    meta = EventMeta.new(ce_type=topic.ce_type, source=topic.source, subject=subject)
    _add(
        session,
        event_id=meta.id,
        topic=topic.name,
        key=str(key),
        value=event.SerializeToString(),
        headers=meta.headers(),
    )
    return meta


def add_dead_letter(
    session: Session,
    *,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    reason: str,
    event_id: str,
) -> None:
    """Stage an unusable record for `<topic>.dlt`, as received, with the reason in a header."""
    dead_headers = [h for h in headers if h[0] != "dlt_reason"]
    dead_headers += [("dlt_reason", reason.encode()), ("dlt_original_topic", topic.encode())]
    _add(
        session,
        event_id=event_id,
        topic=f"{topic}.dlt",
        key=(key or b"").decode("utf-8", "replace"),
        value=value or b"",
        headers=dead_headers,
    )
