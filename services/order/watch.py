"""Order changes for WatchOrders streams: the `order-updates` topic, tailed and fanned out.

Every Order replica tails `order-updates` (OrderUpdated, written through the outbox in the
transaction of each change) without a consumer group, so a stream on any replica sees every
change, whichever replica made it. A change's place in that topic (partition, offset) is
the same on every replica, so a resume token (the stream's next offset in each partition)
issued by one replica resumes on another.

Threads: the tail reads Kafka on its own thread and hands each batch to the event loop;
everything else here (history, positions, watchers) is touched on the loop only, so a
stream registers and reads the history in one step, with no gap between the two.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TypeVar

from confluent_kafka import Consumer, KafkaError, TopicPartition
from google.protobuf.message import DecodeError

from paysaga.v1 import events_pb2, orders_pb2
from services.common.worker import BackgroundWorker
from services.saga.topics import ORDER_UPDATES

log = logging.getLogger(__name__)

#: A stream's place in `order-updates`: partition -> the next offset it has not seen.
Position = dict[int, int]

_Key = TypeVar("_Key", int, str)

TERMINAL = (orders_pb2.ORDER_STATUS_COMPLETED, orders_pb2.ORDER_STATUS_FAILED)


@dataclass(frozen=True, slots=True)
class Change:
    """One OrderUpdated record: the order as it stood right after one change."""

    partition: int
    offset: int
    order: orders_pb2.Order


class BadResumeToken(ValueError):
    """A resume token that is not one this service issued."""


class ResumeTokenTooOld(LookupError):
    """A resume token from before the oldest change this server still holds."""


@dataclass
class ResumeToken:
    """Where a stream stands: its position, and the order versions the client already has.

    `versions` holds, for a watch of one order, the last version sent; for other watches,
    the orders sent as initial state whose change may still come on the topic (so it is
    not sent twice). Opaque to clients: base64url of a small JSON object.
    """

    position: Position
    versions: dict[str, int] = field(default_factory=dict)
    #: Issued while the initial state was still being sent: a resume sends the rest of it.
    initial: bool = False

    def encode(self) -> str:
        data: dict[str, object] = {
            "p": {str(p): o for p, o in self.position.items()},
            "v": self.versions,
        }
        if self.initial:
            data["i"] = 1
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> ResumeToken:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            position = {int(p): int(o) for p, o in data["p"].items()}
            versions = {str(i): int(v) for i, v in data.get("v", {}).items()}
            initial = bool(data.get("i", 0))
        except (binascii.Error, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BadResumeToken(
                "resume_token is not a token this service issued: pass the resume_token of "
                "a WatchOrdersResponse unchanged, or watch without one"
            ) from exc
        if any(o < 0 for o in position.values()) or any(p < 0 for p in position):
            raise BadResumeToken("resume_token holds a negative offset: it was altered")
        return cls(position, versions, initial)


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
