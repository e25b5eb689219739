"""Order changes fanned out to WatchOrders streams, as each change is committed."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from paysaga.v1 import orders_pb2


class Subscription:
    """One watcher's queue of changes; `overflowed` once it fell too far behind."""

    def __init__(self, maxsize: int) -> None:
        self.changes: queue.Queue[orders_pb2.Order] = queue.Queue(maxsize)
        self.overflowed = False


class OrderChanges:
    """Publish/subscribe of committed order changes within this process."""

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
