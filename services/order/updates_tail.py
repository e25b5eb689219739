"""The tail of `order-updates`: every order change, read from Kafka and handed to the feed.

Every Order replica tails `order-updates` (OrderUpdated, written through the outbox in the
transaction of each change) without a consumer group, so a stream on any replica sees
every change, whichever replica made it. The tail reads on its own thread and fans each
batch out there too (services.order.feed), off the gRPC event loop.
"""

from __future__ import annotations

import logging
import threading

from confluent_kafka import Consumer, KafkaError, TopicPartition
from google.protobuf.message import DecodeError

from paysaga.v1 import events_pb2
from services.common.worker import BackgroundWorker
from services.order.feed import OrderFeed
from services.order.feed_changes import Change
from services.order.resume_tokens import Position
from services.saga.topics import ORDER_UPDATES

log = logging.getLogger(__name__)


class OrderUpdatesTail(BackgroundWorker):
    """Reads topic `order-updates` and hands every change to the feed.

    It starts `history` records back from the topic's end (shared among its partitions),
    so a freshly started replica can resume streams from tokens another replica issued.
    """

    def __init__(
        self,
        consumer: Consumer,
        feed: OrderFeed,
        *,
        history: int = 50_000,
        poll_timeout_s: float = 0.1,
    ) -> None:
        super().__init__("order-updates-tail")
        self.consumer = consumer
        self.feed = feed
        self.history = history
        self.poll_timeout_s = poll_timeout_s
        self._assigned = threading.Event()
        self._caught_up = threading.Event()
        self._ends: Position = {}

    def problem(self) -> str | None:
        """A status check: why WatchOrders streams cannot start yet, or None.

        Not a readiness check: CreateOrder needs only the database, so a replica started
        during a broker outage takes orders while its streams wait (UNAVAILABLE).
        """
        if not self._caught_up.is_set():
            return f"not yet following {ORDER_UPDATES.name!r}: WatchOrders answers UNAVAILABLE"
        return None

    def _assign(self) -> None:
        metadata = self.consumer.list_topics(ORDER_UPDATES.name, timeout=5)
        topic = metadata.topics.get(ORDER_UPDATES.name)
        if topic is None or topic.error is not None or not topic.partitions:
            raise RuntimeError(f"topic {ORDER_UPDATES.name!r} is missing: create the topics")
        first: Position = {}
        per_partition = max(1, self.history // len(topic.partitions))
        for partition in topic.partitions:
            low, high = self.consumer.get_watermark_offsets(
                TopicPartition(ORDER_UPDATES.name, partition), timeout=5
            )
            first[partition] = max(low, high - per_partition)
            if high > first[partition]:
                self._ends[partition] = high
        self.consumer.assign(
            [TopicPartition(ORDER_UPDATES.name, p, offset) for p, offset in first.items()]
        )
        self.feed.started_threadsafe(first)
        self._assigned.set()
        self._check_caught_up({})

    def _check_caught_up(self, read: Position) -> None:
        for partition, offset in read.items():
            if self._ends.get(partition, 0) <= offset:
                self._ends.pop(partition, None)
        if not self._ends and not self._caught_up.is_set():
            self._caught_up.set()
            self.feed.caught_up_threadsafe()

    def _run(self) -> None:
        try:
            # The broker may be away when the process starts: keep trying, never die of it.
            while not self._assigned.is_set() and not self._stopping.is_set():
                try:
                    self._assign()
                except Exception as exc:
                    log.warning("cannot read order-updates yet", extra={"error": str(exc)})
                    self._stopping.wait(1.0)
            while not self._stopping.is_set():
                changes: list[Change] = []
                read: Position = {}
                # Wait for one record, then take what is already fetched (consume(n, t)
                # alone would wait for n records or the whole timeout).
                first = self.consumer.poll(self.poll_timeout_s)
                batch = [] if first is None else [first, *self.consumer.consume(499, 0)]
                for record in batch:
                    error = record.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("order-updates error", extra={"error": str(error)})
                        continue
                    partition, offset = record.partition() or 0, record.offset() or 0
                    read[partition] = offset + 1
                    try:
                        update = events_pb2.OrderUpdated.FromString(record.value() or b"")
                    except DecodeError:
                        log.warning("undecodable order update skipped", extra={"offset": offset})
                        continue
                    changes.append(Change(partition, offset, update.order))
                if changes:
                    self.feed.publish_threadsafe(changes)
                if read:
                    self._check_caught_up(read)
        finally:
            self.consumer.close()
