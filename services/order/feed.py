"""The order feed: recent changes from `order-updates` in topic order, fanned out to watchers.

Threads: the tail (services.order.updates_tail) reads Kafka on its own thread and fans each
change out there, off the gRPC event loop: it keeps the change in the history, finds its
watchers in three indexes (watchers of its order, of its user, of every order: a change
touches only those), serializes the WatchOrdersResponse once for all of them, queues the
change on each, and tells the loop which idle streams now have something to send
(services.order.write_turns). The streams (services.order.streams) only write.

A lock keeps the history, positions and indexes whole between that thread and the loop, so
a stream registers and reads the history in one step, with no gap between the two; it is
held for one change at a time. A watcher's queue is a deque (appends and pops are atomic),
shared by the two threads without the lock.

The history holds each change as one flat tuple of plain values (its order serialized),
not as a `Change`: the garbage collector stops tracking such tuples, so its full
collections do not walk the history. Held as objects (a `Change` and its `Order`), the
50,000 to 100,000 changes of a busy api process made each full collection stop the whole
process for 0.1-0.2 s, every 12-21 s (docs/performance.md, window 10). The last changes
(`_RECENT_KEPT`, or twice a watcher's backlog) are kept as objects too, so a resumed
stream's replay of them shares each one, and its serialized response, with every stream;
an older held change is queued as it is held and made into a `Change` when its stream
takes it, on the loop.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TypeVar

from paysaga.v1 import orders_pb2
from services.order.feed_changes import (
    OFFSET,
    ORDER_ID,
    PARTITION,
    USER_ID,
    Change,
    HeldChange,
)
from services.order.resume_tokens import Position, ResumeTokenTooOld
from services.order.write_turns import Writer, WriteTurns

log = logging.getLogger(__name__)

_Key = TypeVar("_Key", int, str)

#: The statuses an order ends in: a watch of that one order ends with it.
TERMINAL = (orders_pb2.ORDER_STATUS_COMPLETED, orders_pb2.ORDER_STATUS_FAILED)

#: After a change queued on this many watchers the fan-out thread lets the loop run (it
#: gives up the GIL), rather than keep it until the interpreter takes it back after 5 ms.
_YIELD_AFTER = 256

#: The last changes kept as objects as well as held (see the module docstring), at least:
#: a stream resumed after a moment's drain replays about as far; one ended for falling
#: behind, `max_backlog` changes or more (the feed keeps twice that).
_RECENT_KEPT = 2_000


class Watcher(Writer):
    """One stream's filter and its queue of changes not yet sent.

    `pending` (a deque: appends and pops are atomic) and `ended` are shared by the fan-out
    thread and the loop; the rest is the loop's (services.order.write_turns).
    """

    def __init__(self, user_id: int, order_id: str, max_backlog: int) -> None:
        super().__init__()
        self.user_id = user_id
        self.order_id = order_id
        self.max_backlog = max_backlog
        #: Changes queued at registration from the history (a resumed stream's replay) and
        #: not yet sent: allowed on top of `max_backlog`, or a stream ended for falling
        #: behind would be ended again at once, forever, each time it resumed.
        self.replay_left = 0
        #: Held changes (tuples) come from an old replay, made into Changes by `take`.
        self.pending: deque[Change | HeldChange] = deque()
        #: Why the stream must end now ("behind" or "shutdown"); None while it may go on.
        self.ended: str | None = None
        #: The feed's position when the watcher registered (taken in the same step).
        self.registered_at: Position = {}

    def wants(self, order: orders_pb2.Order) -> bool:
        return self.wants_ids(order.user_id, order.id)

    def wants_ids(self, user_id: int, order_id: str) -> bool:
        return (not self.user_id or user_id == self.user_id) and (
            not self.order_id or order_id == self.order_id
        )

    def offer(self, change: Change | HeldChange) -> bool:
        """Queue `change`; True if the loop must hear of it (the stream waits, or ends now)."""
        if self.ended:
            return False
        if len(self.pending) >= self.max_backlog + self.replay_left:
            self.end("behind")
            return True
        self.pending.append(change)
        return self.idle

    def end(self, reason: str) -> None:
        self.ended = reason
        self.pending.clear()

    def take(self, most: int) -> list[Change]:
        """Up to `most` changes from the front of the queue (loop)."""
        taken: list[Change | HeldChange] = []
        pending = self.pending
        try:
            while len(taken) < most:
                taken.append(pending.popleft())
        except IndexError:
            pass  # empty, or emptied by end() meanwhile
        changes = [c if isinstance(c, Change) else Change.from_held(c) for c in taken]
        if self.replay_left:
            self.replay_left = max(0, self.replay_left - len(changes))
        return changes


class OrderFeed:
    """Recent order changes in topic order, and the watchers they are handed to.

    It keeps the last `history_size` changes (and reads as many back from the topic when
    the process starts), so a stream that reconnects, here or on another replica, resumes
    from its token without missing a change. A change of an order whose version the feed
    already holds (published twice, or an older one after a newer) is not sent to anyone.
    """

    def __init__(self, history_size: int = 50_000, max_backlog: int = 1000) -> None:
        self.history_size = history_size
        self.max_backlog = max_backlog
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        #: The streams' turns to write, on the loop.
        self.turns = WriteTurns()
        self._history: list[HeldChange] = []
        #: The last changes of the history as objects (`_recent[-1]` is `_history[-1]`).
        self._recent: deque[Change] = deque(
            maxlen=min(history_size, max(_RECENT_KEPT, 2 * max_backlog))
        )
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

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The streams write on `loop` (the gRPC server's)."""
        self._loop = loop

    # -- called from the tail's thread ---------------------------------------------------

    def started_threadsafe(self, first: Position) -> None:
        with self._lock:
            self._first = dict(first)
            self.position = {p: max(o, self.position.get(p, 0)) for p, o in first.items()}

    def caught_up_threadsafe(self) -> None:
        if not self.following:
            log.info("following order-updates", extra={"changes_held": len(self._history)})
        self.following = True

    def publish_threadsafe(self, changes: Iterable[Change]) -> None:
        """Fan `changes` out on this thread; wake their idle streams on the loop."""
        loop, turns = self._loop, self.turns
        if loop is None:
            raise RuntimeError("OrderFeed.bind(loop) was not called")
        for change in changes:
            woken, reached = self._append_one(change)
            if woken:
                loop.call_soon_threadsafe(turns.ready, woken)
            if reached >= _YIELD_AFTER:
                time.sleep(0)

    # -- the fan-out (under the lock) ------------------------------------------------------

    def _append(self, changes: Iterable[Change]) -> list[Watcher]:
        """Take `changes`; return the idle watchers given one (or ended), each once."""
        woken: dict[Watcher, None] = {}
        for change in changes:
            woken.update(dict.fromkeys(self._append_one(change)[0]))
        return list(woken)

    def _append_one(self, change: Change) -> tuple[list[Watcher], int]:
        """Take one change: the idle watchers given it (or ended), and how many it reached."""
        with self._lock:
            if change.offset < self.position.get(change.partition, 0):
                return [], 0  # read again after a reassignment
            self.position[change.partition] = change.offset + 1
            order = change.order
            newest = self._newest.get(order.id)
            if order.version and newest is not None and order.version <= newest[0]:
                return [], 0  # published twice, or older than one already sent
            change.after = dict(self.position)
            self._history.append(change.to_held())
            self._recent.append(change)
            self._newest[order.id] = (order.version, change.partition, change.offset)
            if len(self._history) > 2 * self.history_size:
                self._forget(len(self._history) - self.history_size)
            by_user = self._by_user.get(order.user_id, ())
            by_order = self._by_order.get(order.id, ())
            if self._everyone or by_user:
                change.frame()  # serialized here, once, for all of them
            if by_order:
                change.frame_for_one_order()
            # Each watcher is in one index only; the user's and every order's want it all.
            woken = [w for w in self._everyone if w.offer(change)]
            woken += [w for w in by_user if w.offer(change)]
            woken += [w for w in by_order if w.wants(order) and w.offer(change)]
            return woken, len(self._everyone) + len(by_user) + len(by_order)

    def _forget(self, count: int) -> None:
        """Drop the oldest `count` changes: resuming from before them is no longer possible."""
        for held in self._history[:count]:
            partition, offset, order_id = held[PARTITION], held[OFFSET], held[ORDER_ID]
            self._first[partition] = max(self._first.get(partition, 0), offset + 1)
            newest = self._newest.get(order_id)
            if newest is not None and newest[1:] == (partition, offset):
                del self._newest[order_id]
        del self._history[:count]

    # -- called on the loop --------------------------------------------------------------

    def watch(self, user_id: int, order_id: str, resume_from: Position | None) -> Watcher:
        """Register a watcher; with `resume_from`, queue the held changes from there on.

        Raises ResumeTokenTooOld if changes after `resume_from` are no longer held.
        """
        watcher = Watcher(user_id, order_id, self.max_backlog)
        with self._lock:
            if resume_from is not None:
                for partition, first in self._first.items():
                    if resume_from.get(partition, 0) < first:
                        raise ResumeTokenTooOld(
                            f"resume_token is older than the changes this server holds "
                            f"(partition {partition} from offset {first}): watch again "
                            "without it"
                        )
                replay = [c for c in self._since(resume_from) if _wanted_by(watcher, c)]
                watcher.replay_left = len(replay)
                for change in replay:
                    watcher.offer(change)
            watcher.registered_at = dict(self.position)
            if order_id:
                self._by_order.setdefault(order_id, set()).add(watcher)
            elif user_id:
                self._by_user.setdefault(user_id, set()).add(watcher)
            else:
                self._everyone.add(watcher)
        return watcher

    def _since(self, position: Position) -> list[Change | HeldChange]:
        """Held changes at or after `position`, oldest first (scanning back from the newest);
        the recent ones as their Change objects."""
        done = {p for p, o in self.position.items() if o <= position.get(p, 0)}
        found: list[Change | HeldChange] = []
        recent = self._recent
        for back, held in enumerate(reversed(self._history), start=1):
            if len(done) == len(self.position):
                break
            partition = held[PARTITION]
            if held[OFFSET] >= position.get(partition, 0):
                found.append(recent[-back] if back <= len(recent) else held)
            else:
                done.add(partition)
        found.reverse()
        return found

    def unwatch(self, watcher: Watcher) -> None:
        with self._lock:
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
        newest = self._newest.get(order.id)  # one atomic read: no lock needed
        if newest is None:
            return False
        version, partition, offset = newest
        return version >= order.version and offset < position.get(partition, 0)

    def close(self) -> None:
        """End every stream (the server is shutting down) and take no new ones."""
        with self._lock:
            self.closed = True
            watchers = self._all()
            for watcher in watchers:
                watcher.end("shutdown")
        self.turns.ready(watchers)

    def _all(self) -> list[Watcher]:
        return [
            *self._everyone,
            *(w for group in self._by_user.values() for w in group),
            *(w for group in self._by_order.values() for w in group),
        ]

    @property
    def watchers(self) -> int:
        with self._lock:
            return len(self._all())


def _wanted_by(watcher: Watcher, change: Change | HeldChange) -> bool:
    if isinstance(change, Change):
        return watcher.wants(change.order)
    return watcher.wants_ids(change[USER_ID], change[ORDER_ID])


def _discard(groups: dict[_Key, set[Watcher]], key: _Key, watcher: Watcher) -> None:
    group = groups.get(key)
    if group is not None:
        group.discard(watcher)
        if not group:
            del groups[key]
