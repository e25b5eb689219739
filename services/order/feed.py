"""The order feed: recent changes from `order-updates` in topic order, fanned out to watchers.

Threads: the tail (services.order.updates_tail) reads Kafka on its own thread and hands
each batch to the event loop; everything here (history, positions, watchers) is touched
on the loop only, so a stream registers and reads the history in one step, with no gap
between the two.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TypeVar

from paysaga.v1 import orders_pb2
from services.order.resume_tokens import Position, ResumeTokenTooOld

log = logging.getLogger(__name__)

_Key = TypeVar("_Key", int, str)

#: The statuses an order ends in: a watch of that one order ends with it.
TERMINAL = (orders_pb2.ORDER_STATUS_COMPLETED, orders_pb2.ORDER_STATUS_FAILED)


@dataclass(frozen=True, slots=True)
class Change:
    """One OrderUpdated record: the order as it stood right after one change."""

    partition: int
    offset: int
    order: orders_pb2.Order


class Watcher:
    """One stream's filter and its queue of changes not yet sent."""

    def __init__(self, user_id: int, order_id: str, max_backlog: int) -> None:
        self.user_id = user_id
        self.order_id = order_id
        self.max_backlog = max_backlog
        self.pending: deque[Change] = deque()
        self.wakeup = asyncio.Event()
        #: Why the stream must end now ("behind" or "shutdown"); None while it may go on.
        self.ended: str | None = None

    def wants(self, order: orders_pb2.Order) -> bool:
        return (not self.user_id or order.user_id == self.user_id) and (
            not self.order_id or order.id == self.order_id
        )

    def offer(self, change: Change) -> None:
        if self.ended:
            return
        if len(self.pending) >= self.max_backlog:
            self.end("behind")
            return
        self.pending.append(change)
        self.wakeup.set()

    def end(self, reason: str) -> None:
        self.ended = reason
        self.pending.clear()
        self.wakeup.set()


class OrderFeed:
    """Recent order changes in topic order, and the watchers they are handed to (loop only).

    It keeps the last `history_size` changes (and reads as many back from the topic when
    the process starts), so a stream that reconnects, here or on another replica, resumes
    from its token without missing a change.
    """

    def __init__(self, history_size: int = 50_000, max_backlog: int = 1000) -> None:
        self.history_size = history_size
        self.max_backlog = max_backlog
        self._loop: asyncio.AbstractEventLoop | None = None
        self._history: list[Change] = []
        #: Next offset per partition after the last change received.
        self.position: Position = {}
        #: Per partition, the oldest offset a resumed stream may start from.
        self._first: Position = {}
        #: order id -> (version, partition, offset) of its newest change in the history.
        self._newest: dict[str, tuple[int, int, int]] = {}
        self._by_order: dict[str, set[Watcher]] = {}
        self._by_user: dict[int, set[Watcher]] = {}
        self._everyone: set[Watcher] = set()
        #: Set once the tail has read what the topic held when it started.
        self.following = False
        self.closed = False

    # -- called from the tail's thread ---------------------------------------------------

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Deliver on `loop` (the gRPC server's) from now on."""
        self._loop = loop

    def started_threadsafe(self, first: Position) -> None:
        self._call(self._started, dict(first))

    def caught_up_threadsafe(self) -> None:
        self._call(self._caught_up)

    def publish_threadsafe(self, changes: list[Change]) -> None:
        self._call(self._append, changes)

    def _call(self, fn: object, *args: object) -> None:
        if self._loop is None:
            raise RuntimeError("OrderFeed.bind(loop) was not called")
        self._loop.call_soon_threadsafe(fn, *args)  # type: ignore[arg-type]

    # -- on the loop -------------------------------------------------------------------

    def _started(self, first: Position) -> None:
        self._first = dict(first)
        self.position = {p: max(o, self.position.get(p, 0)) for p, o in first.items()}

    def _caught_up(self) -> None:
        if not self.following:
            log.info("following order-updates", extra={"changes_held": len(self._history)})
        self.following = True

    def _append(self, changes: list[Change]) -> None:
        for change in changes:
            if change.offset < self.position.get(change.partition, 0):
                continue  # read again after a reassignment
            self._history.append(change)
            self.position[change.partition] = change.offset + 1
            order = change.order
            self._newest[order.id] = (order.version, change.partition, change.offset)
            for watcher in self._targets(order):
                if watcher.wants(order):
                    watcher.offer(change)
        if len(self._history) > 2 * self.history_size:
            self._forget(len(self._history) - self.history_size)

    def _forget(self, count: int) -> None:
        """Drop the oldest `count` changes: resuming from before them is no longer possible."""
        for change in self._history[:count]:
            self._first[change.partition] = max(
                self._first.get(change.partition, 0), change.offset + 1
            )
            newest = self._newest.get(change.order.id)
            if newest is not None and newest[1:] == (change.partition, change.offset):
                del self._newest[change.order.id]
        del self._history[:count]

    def _targets(self, order: orders_pb2.Order) -> Iterable[Watcher]:
        yield from self._everyone
        yield from self._by_user.get(order.user_id, ())
        yield from self._by_order.get(order.id, ())

    def watch(self, user_id: int, order_id: str, resume_from: Position | None) -> Watcher:
        """Register a watcher; with `resume_from`, queue the held changes from there on.

        Raises ResumeTokenTooOld if changes after `resume_from` are no longer held.
        """
        watcher = Watcher(user_id, order_id, self.max_backlog)
        if resume_from is not None:
            for partition, first in self._first.items():
                if resume_from.get(partition, 0) < first:
                    raise ResumeTokenTooOld(
                        f"resume_token is older than the changes this server holds "
                        f"(partition {partition} from offset {first}): watch again without it"
                    )
            for change in self._since(resume_from):
                if watcher.wants(change.order):
                    watcher.offer(change)
        if order_id:
            self._by_order.setdefault(order_id, set()).add(watcher)
        elif user_id:
            self._by_user.setdefault(user_id, set()).add(watcher)
        else:
            self._everyone.add(watcher)
        return watcher

    def _since(self, position: Position) -> list[Change]:
        """Held changes at or after `position`, oldest first (scanning back from the newest)."""
        done = {p for p, o in self.position.items() if o <= position.get(p, 0)}
        found: list[Change] = []
        for change in reversed(self._history):
            if len(done) == len(self.position):
                break
            if change.offset >= position.get(change.partition, 0):
                found.append(change)
            else:
                done.add(change.partition)
        found.reverse()
        return found

    def unwatch(self, watcher: Watcher) -> None:
        if watcher.order_id:
            _discard(self._by_order, watcher.order_id, watcher)
        elif watcher.user_id:
            _discard(self._by_user, watcher.user_id, watcher)
        else:
            self._everyone.discard(watcher)

    def seen_before(self, order: orders_pb2.Order, position: Position) -> bool:
        """True if this version of `order` came on the topic before `position`.

        An initial state read from the database may be newer than `position`: then its
        change is still to come on the topic, and a stream must not send it twice. An
        order with no change held is taken as not seen (the safe answer).
        """
        newest = self._newest.get(order.id)
        if newest is None:
            return False
        version, partition, offset = newest
        return version >= order.version and offset < position.get(partition, 0)

    def close(self) -> None:
        """End every stream (the server is shutting down) and take no new ones."""
        self.closed = True
        for watcher in [
            *self._everyone,
            *(w for group in self._by_user.values() for w in group),
            *(w for group in self._by_order.values() for w in group),
        ]:
            watcher.end("shutdown")

    @property
    def watchers(self) -> int:
        return (
            len(self._everyone)
            + sum(len(g) for g in self._by_user.values())
            + sum(len(g) for g in self._by_order.values())
        )


def _discard(groups: dict[_Key, set[Watcher]], key: _Key, watcher: Watcher) -> None:
    group = groups.get(key)
    if group is not None:
        group.discard(watcher)
        if not group:
            del groups[key]
