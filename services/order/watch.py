"""Order changes fanned out to WatchOrders streams, from the `order-updates` topic."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from confluent_kafka import Consumer, KafkaError, TopicPartition
from google.protobuf.message import DecodeError

from paysaga.v1 import events_pb2, orders_pb2
from services.common.topics import ORDER_UPDATES
from services.common.worker import BackgroundWorker

log = logging.getLogger(__name__)


class Subscription:
    """One watcher's queue of changes; `overflowed` once it fell too far behind."""

    def __init__(self, maxsize: int) -> None:
        self.changes: queue.Queue[orders_pb2.Order] = queue.Queue(maxsize)
        self.overflowed = False


class OrderChanges:
    """Publish/subscribe of committed order changes to this process's watchers."""

    def __init__(self, max_backlog: int = 10000) -> None:
        self.max_backlog = max_backlog
        self._lock = threading.Lock()
        self._subscriptions: set[Subscription] = set()

    def publish(self, order: orders_pb2.Order) -> None:
        with self._lock:
            subscriptions = list(self._subscriptions)
        for sub in subscriptions:
            try:
                sub.changes.put_nowait(order)
            except queue.Full:
                sub.overflowed = True

    @contextmanager
    def subscribe(self) -> Iterator[Subscription]:
        sub = Subscription(self.max_backlog)
        with self._lock:
            self._subscriptions.add(sub)
        try:
            yield sub
        finally:
            with self._lock:
                self._subscriptions.discard(sub)


class OrderUpdatesTail(BackgroundWorker):
    """Reads topic `order-updates` from its end and publishes each change to `changes`.

    Every Order replica runs one, without a consumer group (partitions assigned, offsets
    never committed), so WatchOrders on any replica sees every change, whichever replica
    applied it.
    """

    def __init__(self, consumer: Consumer, changes: OrderChanges, poll_timeout_s: float = 0.2):
        super().__init__("order-updates-tail")
        self.consumer = consumer
        self.changes = changes
        self.poll_timeout_s = poll_timeout_s
        self._assigned = threading.Event()

    def ready(self) -> None:
        """A readiness check: raise until the partitions are assigned (changes flow)."""
        if not self._assigned.is_set():
            raise RuntimeError(f"not yet reading {ORDER_UPDATES.name!r}")

    def _assign(self) -> None:
        """Assign every partition at its current end."""
        metadata = self.consumer.list_topics(ORDER_UPDATES.name, timeout=5)
        topic = metadata.topics.get(ORDER_UPDATES.name)
        if topic is None or topic.error is not None or not topic.partitions:
            raise RuntimeError(f"topic {ORDER_UPDATES.name!r} is missing: create the topics")
        assignment = []
        for partition in topic.partitions:
            _low, high = self.consumer.get_watermark_offsets(
                TopicPartition(ORDER_UPDATES.name, partition), timeout=5
            )
            assignment.append(TopicPartition(ORDER_UPDATES.name, partition, high))
        self.consumer.assign(assignment)
        self._assigned.set()

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
                for record in self.consumer.consume(500, self.poll_timeout_s):
                    error = record.error()
                    if error is not None:
                        if error.code() != KafkaError._PARTITION_EOF:
                            log.warning("order-updates error", extra={"error": str(error)})
                        continue
                    try:
                        update = events_pb2.OrderUpdated.FromString(record.value() or b"")
                    except DecodeError:
                        log.warning(
                            "undecodable order update skipped", extra={"offset": record.offset()}
                        )
                        continue
                    self.changes.publish(update.order)
        finally:
            self.consumer.close()
