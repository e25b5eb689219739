"""A consumed Kafka record and what decoding it found, whatever its bytes.

Decoding never raises: a record that cannot be read or decoded (headers a client cannot
read, a missing or hostile CloudEvents attribute, a payload no parser takes, a redrive
header no inbox key can be) comes back with the reason in `error`, and is dead-lettered.
Its headers are read once and kept: the poison path never reads the record again.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message as KafkaMessage
from google.protobuf.message import Message

from services.common.headers import Headers, header_text
from services.common.messaging.cloudevents import MAX_KEY_CHARS, EventMeta, InvalidEvent, decode
from services.common.messaging.journal import REDRIVE_HEADER
from services.common.messaging.topics import Topic
from services.common.observability.tracing import KafkaRecord


def coordinates(record: KafkaMessage) -> tuple[str, int, int]:
    """A consumed record's (topic, partition, offset)."""
    return record.topic() or "", record.partition() or 0, record.offset() or 0


def reason(exc: BaseException) -> str:
    """An exception as a dead letter's reason: its type and message."""
    return f"{type(exc).__name__}: {exc}"


@dataclass
class ConsumedRecord:
    """A consumed Kafka record and what decoding it found."""

    kafka: KafkaMessage
    #: Its headers as consumed (none if they cannot be read: `error` says why).
    headers: Headers
    meta: EventMeta | None = None
    event: Message | None = None
    #: Why the record cannot be decoded ("" if it was).
    error: str = ""
    #: A redriven dead letter's redrive id (services.common.messaging.journal.redrive_id), else "".
    redrive_id: str = ""
    #: Whether the client failed to read its headers (they must not be read again).
    headers_unreadable: bool = False

    @property
    def topic(self) -> str:
        return self.kafka.topic() or ""

    @property
    def where(self) -> str:
        """The record's coordinates, `topic/partition/offset`."""
        return "/".join(map(str, coordinates(self.kafka)))

    @property
    def inbox_id(self) -> str:
        """The redrive id of a redriven dead letter (its event id is in the inbox already:
        recorded when it was dead-lettered); else the event id, or the record's coordinates
        when it has no usable id."""
        if self.redrive_id:
            return self.redrive_id
        return self.meta.id if self.meta is not None else self.where

    @property
    def traced(self) -> KafkaRecord:
        """The record as its span reads it (without headers when they are unreadable)."""
        return _Headerless(self.kafka) if self.headers_unreadable else self.kafka

    def log_fields(self) -> dict[str, object]:
        topic, partition, offset = coordinates(self.kafka)
        return {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "event_id": self.inbox_id,
            "subject": self.meta.subject if self.meta else "",
        }


def decode_record(topic: Topic, kafka: KafkaMessage) -> ConsumedRecord:
    """The record's event and metadata, or why it cannot be applied (never raises)."""
    try:
        raw = kafka.headers() or []
        headers: Headers = list(raw.items()) if isinstance(raw, dict) else list(raw)
    except Exception as exc:
        # confluent-kafka raises on a header name that is not UTF-8.
        error = f"its headers cannot be read: {reason(exc)}"
        return ConsumedRecord(kafka, [], error=error, headers_unreadable=True)
    try:
        redrive = next((header_text(v) for k, v in headers if k == REDRIVE_HEADER), "")
        if len(redrive) > MAX_KEY_CHARS or "\x00" in redrive:
            return ConsumedRecord(kafka, headers, error=f"unusable {REDRIVE_HEADER} header")
        meta, event = decode(topic, headers, kafka.value())
    except InvalidEvent as exc:
        return ConsumedRecord(kafka, headers, error=str(exc), redrive_id=redrive)
    except Exception as exc:  # what no check foresaw (a header of another type, a parser bug)
        return ConsumedRecord(kafka, headers, error=f"cannot decode it: {reason(exc)}")
    return ConsumedRecord(kafka, headers, meta=meta, event=event, redrive_id=redrive)


class _Headerless:
    """A record whose headers cannot be read, as a span sees it: without them."""

    def __init__(self, record: KafkaMessage) -> None:
        self._record = record

    def topic(self) -> str | None:
        return self._record.topic()

    def partition(self) -> int | None:
        return self._record.partition()

    def offset(self) -> int | None:
        return self._record.offset()

    def headers(self) -> Headers:
        return []
