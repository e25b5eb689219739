"""Stand-ins for confluent-kafka's consumer and its records, for the hop's unit tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from services.common.headers import Headers


@dataclass
class FakeRecord:
    """Stands in for confluent_kafka.Message."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes
    _headers: Headers
    _key: bytes | None = b"1"

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> Headers:
        return self._headers

    def error(self) -> None:
        return None


@dataclass
class FakeConsumer:
    """Records the offsets stored (for librdkafka to commit) and the seeks."""

    stored: list[list[tuple[str, int, int]]] = field(default_factory=list)
    seeks: list[tuple[str, int, int]] = field(default_factory=list)

    def store_offsets(self, offsets: Any) -> None:
        self.stored.append([(tp.topic, tp.partition, tp.offset) for tp in offsets])

    def seek(self, tp: Any) -> None:
        self.seeks.append((tp.topic, tp.partition, tp.offset))
