"""CloudEvents binary mode over Kafka: event metadata in `ce_*` headers, the protobuf as value."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError, Message

from services.common.headers import Headers, header_dict
from services.common.messaging.topics import Topic

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/protobuf"
REQUIRED_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_specversion")


class InvalidEvent(Exception):
    """An event that can never be applied: it goes to the dead-letter topic with this reason."""


@dataclass(frozen=True)
class EventMeta:
    """The CloudEvents attributes of one event."""

    id: str
    type: str
    source: str
    time: str
    subject: str = ""

    @classmethod
    def new(cls, *, ce_type: str, source: str, subject: str = "") -> EventMeta:
        now = datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
        return cls(id=str(uuid.uuid4()), type=ce_type, source=source, time=now, subject=subject)

    def headers(self) -> Headers:
        headers: Headers = [
            ("ce_specversion", SPEC_VERSION.encode()),
            ("ce_id", self.id.encode()),
            ("ce_type", self.type.encode()),
            ("ce_source", self.source.encode()),
            ("ce_time", self.time.encode()),
            ("content-type", CONTENT_TYPE.encode()),
        ]
        if self.subject:
            headers.append(("ce_subject", self.subject.encode()))
        return headers


def decode(topic: Topic, headers: Headers | None, value: bytes | None) -> tuple[EventMeta, Message]:
    """Check a record's headers and parse its payload as the topic's event type.

    Raises InvalidEvent saying what is wrong: a missing header, a type that does not
    belong on this topic, or a payload that is not a protobuf of that type.
    """
    found = header_dict(headers)
    missing = [name for name in REQUIRED_HEADERS if not found.get(name)]
    if missing:
        raise InvalidEvent(f"missing CloudEvents header(s): {', '.join(missing)}")
    if found["ce_specversion"] != SPEC_VERSION:
        raise InvalidEvent(f"unsupported ce_specversion {found['ce_specversion']!r}")
    event_type = topic.event_type_named(found["ce_type"])
    if event_type is None:
        expected = ", ".join(repr(t.DESCRIPTOR.full_name) for t in topic.event_types)
        raise InvalidEvent(
            f"event type {found['ce_type']!r} does not belong on topic {topic.name!r} "
            f"(expected {expected})"
        )
    if found["ce_source"] != topic.source:
        raise InvalidEvent(
            f"event source {found['ce_source']!r} does not publish on topic {topic.name!r} "
            f"(only {topic.source!r} does)"
        )
    content_type = found.get("content-type", CONTENT_TYPE)
    if content_type != CONTENT_TYPE:
        raise InvalidEvent(f"unsupported content-type {content_type!r}")
    if not value:
        raise InvalidEvent("empty payload")
    try:
        event = event_type.FromString(value)
    except DecodeError as exc:
        raise InvalidEvent(f"payload is not a valid {found['ce_type']}: {exc}") from exc
    subject = found.get("ce_subject", "")
    order_id = getattr(event, "order_id", subject)
    if subject != order_id:
        raise InvalidEvent(f"ce_subject {subject!r} is not the event's order_id {order_id!r}")
    meta = EventMeta(
        id=found["ce_id"],
        type=found["ce_type"],
        source=found["ce_source"],
        time=found.get("ce_time", ""),
        subject=subject,
    )
    return meta, event
