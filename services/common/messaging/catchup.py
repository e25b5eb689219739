"""Has a consumer applied everything on its partitions? Its positions against the high
watermarks read at that moment, asked for again each time, never remembered.

A consumer answers on its own thread, between two batches (`PositionsRequest`): there its
positions are those of the records it applied, never of a batch fetched and still in
hand, and the client is not used from two threads. A partition it holds but has applied
nothing of since it got it stands where the group committed it (every committed offset
was stored after its batch's database commit), or at its first record if the group never
committed it.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition

#: Wait at most this long for a broker to answer (the committed offsets of a partition).
BROKER_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CaughtUpPartitions:
    """Of `topic` (`partition_count` partitions), the `partitions` this consumer holds and
    has applied every record of that was on them at `as_of`."""

    topic: str
    partition_count: int
    partitions: frozenset[int]
    as_of: datetime


class PositionsRequest:
    """A question to the consumer's thread: up to where has it applied `topic`?"""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        #: Partition -> offset of the next record to apply, for each partition held.
        self.positions: dict[int, int] | None = None
        self._answered = threading.Event()

    def answer(self, positions: dict[int, int] | None) -> None:
        self.positions = positions
        self._answered.set()

    def wait(self, timeout_s: float) -> dict[int, int] | None:
        """The answer, or None if there was none in time or the consumer could not tell."""
        return self.positions if self._answered.wait(timeout_s) else None


class AppliedPositions:
    """Where a consumer stands on each partition it holds: kept on the consumer's thread.

    `applied` is told each batch's next offsets once the batch is committed; `forget`
    drops partitions that moved away (or came back: another member may have applied more
    of them meanwhile).
    """

    def __init__(self) -> None:
        self._applied: dict[tuple[str, int], int] = {}
        #: Committed offsets of partitions held but not applied from since they came.
        self._committed: dict[tuple[str, int], int] = {}

    def applied(self, next_offsets: Mapping[tuple[str, int], int]) -> None:
        self._applied.update(next_offsets)

    def forget(self, partitions: set[tuple[str, int]] | None = None) -> None:
        """Forget these partitions (None: all of them)."""
        if partitions is None:
            self._applied.clear()
            self._committed.clear()
            return
        for key in partitions:
            self._applied.pop(key, None)
            self._committed.pop(key, None)

    def of(self, client: Consumer, held: list[tuple[str, int]]) -> dict[int, int]:
        """Partition -> offset of the next record to apply, for these held partitions of one
        topic. Raises if the group coordinator does not say where a partition stands."""
        unknown = [k for k in held if k not in self._applied and k not in self._committed]
        if unknown:
            committed = client.committed(
                [TopicPartition(t, p) for t, p in unknown], timeout=BROKER_TIMEOUT_S
            )
            for tp in committed:
                if tp.error is not None:
                    raise RuntimeError(f"committed offset of {tp.topic}/{tp.partition}: {tp.error}")
                self._committed[(tp.topic, tp.partition)] = tp.offset
        positions: dict[int, int] = {}
        for topic, partition in held:
            position = self._applied.get((topic, partition))
            if position is None:
                position = self._committed[(topic, partition)]
            if position < 0:  # never committed: read from its first record
                position = _log_start(client, TopicPartition(topic, partition))
            positions[partition] = position
        return positions


def _log_start(client: Consumer, tp: TopicPartition) -> int:
    """Where a consumer reads a partition its group never committed (auto.offset.reset is
    earliest): the low watermark the client last saw (0 if it saw none)."""
    try:
        low, _high = client.get_watermark_offsets(tp, cached=True) or (0, 0)
    except KafkaException:
        return 0
    return max(low, 0)
