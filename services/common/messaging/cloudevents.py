"""CloudEvents binary mode over Kafka: event metadata in `ce_*` headers, the protobuf as value."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError, Message

from services.common.headers import Headers, header_dict
from services.common.ids import time_ordered_uuid
from services.common.messaging.topics import Topic

SPEC_VERSION = "1.0"
CONTENT_TYPE = "application/protobuf"
REQUIRED_HEADERS = ("ce_id", "ce_type", "ce_source", "ce_specversion")
#: The longest ce_id and ce_subject accepted: consumers key database rows by them (the inbox,
#: the journal), and an index refuses long entries. Ours are UUIDs.
MAX_KEY_CHARS = 255
#: How much of a refused value a reason repeats.
_SHOWN_CHARS = 100


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
        return cls(id=time_ordered_uuid(), type=ce_type, source=source, time=now, subject=subject)

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
        raise InvalidEvent(f"unsupported ce_specversion {_shown(found['ce_specversion'])}")
    _check_key("ce_id", found["ce_id"])
    event_type = topic.event_type_named(found["ce_type"])
    if event_type is None:
        expected = ", ".join(repr(t.DESCRIPTOR.full_name) for t in topic.event_types)
        raise InvalidEvent(
            f"event type {_shown(found['ce_type'])} does not belong on topic {topic.name!r} "
            f"(expected {expected})"
        )
    if found["ce_source"] != topic.source:
        raise InvalidEvent(
            f"event source {_shown(found['ce_source'])} does not publish on topic "
            f"{topic.name!r} (only {topic.source!r} does)"
        )
    content_type = found.get("content-type", CONTENT_TYPE)
    if content_type != CONTENT_TYPE:
        raise InvalidEvent(f"unsupported content-type {_shown(content_type)}")
    if not value:
        raise InvalidEvent("empty payload")
    try:
        event = event_type.FromString(value)
    except DecodeError as exc:
        raise InvalidEvent(f"payload is not a valid {found['ce_type']}: {exc}") from exc
    subject = found.get("ce_subject", "")
    _check_key("ce_subject", subject)
    order_id = getattr(event, "order_id", subject)
    if subject != order_id:
        raise InvalidEvent(
            f"ce_subject {_shown(subject)} is not the event's order_id {_shown(order_id)}"
        )
    meta = EventMeta(
        id=found["ce_id"],
        type=found["ce_type"],
        source=found["ce_source"],
        time=found.get("ce_time", ""),
        subject=subject,
    )
    return meta, event


def _check_key(name: str, text: str) -> None:
    """Refuse an attribute the consumer keys rows by that no index or text column takes."""
    if len(text) > MAX_KEY_CHARS:
        raise InvalidEvent(f"{name} is {len(text)} characters long; at most {MAX_KEY_CHARS}")
    if "\x00" in text:
        raise InvalidEvent(f"{name} {_shown(text)} holds a NUL character")


def _shown(text: str) -> str:
    """A refused value as a reason repeats it: quoted, and cut if long."""
    if len(text) <= _SHOWN_CHARS:
        return repr(text)
    return f"{text[:_SHOWN_CHARS]!r}... ({len(text)} characters)"
