"""The outbox: events to publish, written in the same transaction as the change they announce.

A transaction collects its outgoing records in an `OutboxWriter` and writes them with one
INSERT at the end; the relay is woken once that transaction has committed.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import insert
from sqlmodel import Field, Session, SQLModel

from services.common.cloudevents import EventMeta, Headers, header_text
from services.common.db import run_after_commit
from services.common.timeutil import utcnow
from services.common.topics import topic_for_event


class OutboxRecord(SQLModel, table=True):
    """One Kafka record waiting to be published; deleted once the broker confirmed it."""

    __tablename__ = "outbox"
    # Never reuse a seq, even after every row was deleted: the relay keeps its place by seq.
    __table_args__ = {"sqlite_autoincrement": True}

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


class OutboxWriter:
    """The outgoing records of one transaction, in order; `write` inserts them all."""

    def __init__(self) -> None:
        self.rows: list[dict[str, Any]] = []

    def _add(self, *, event_id: str, topic: str, key: str, value: bytes, headers: Headers) -> None:
        self.rows.append(
            {
                "event_id": event_id,
                "topic": topic,
                "key": key,
                "value": value,
                "headers_json": json.dumps([[k, header_text(v)] for k, v in headers]),
                "created_at": utcnow(),
            }
        )

    def add_event(self, event: Message, *, key: int | str, subject: str = "") -> EventMeta:
        """Stage `event` for publication on its topic, keyed by `key`."""
        topic = topic_for_event(event)
        meta = EventMeta.new(ce_type=topic.ce_type, source=topic.source, subject=subject)
        self._add(
            event_id=meta.id,
            topic=topic.name,
            key=str(key),
            value=event.SerializeToString(),
            headers=meta.headers(),
        )
        return meta

    def add_dead_letter(
        self,
        *,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Headers,
        reason: str,
        event_id: str,
    ) -> None:
        """Stage an unusable record for `<topic>.dlt`, as received, with the reason in a header."""
        dead_headers = [h for h in headers if h[0] not in ("dlt_reason", "dlt_original_topic")]
        dead_headers += [("dlt_reason", reason.encode()), ("dlt_original_topic", topic.encode())]
        self._add(
            event_id=event_id,
            topic=f"{topic}.dlt",
            key=header_text(key),
            value=value or b"",
            headers=dead_headers,
        )

    def write(self, session: Session) -> None:
        """Insert the staged records in this transaction; wake the relay once it commits."""
        if not self.rows:
            return
        session.execute(insert(OutboxRecord), self.rows)
        self.rows = []
        signal = session.info.get("outbox_signal")
        if signal is not None:
            run_after_commit(session, signal.set)
