"""UTC time helpers: the database keeps aware UTC datetimes, the protos carry Timestamps."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp


def utcnow() -> datetime:
    """Now, as an aware UTC datetime (SQLModel stores and returns these)."""
    return datetime.now(UTC)


def to_timestamp(moment: datetime) -> Timestamp:
    """A naive-UTC or aware datetime as a protobuf Timestamp."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp
