"""One WatchOrders stream: its initial state, then the changes the feed queued for it.

It sends the initial state first (the order, or the orders in flight) and remembers which
versions that gave the client, so their changes are not sent again; then it writes its
queued changes a turn at a time (services.order.write_turns). While it is in step with the
feed, its place is the one right after the change it sends, so the change's own resume
token is its token too, and it writes the bytes the feed serialized once for every stream
(services.order.feed); while initial-state orders are pending, or resumed from a token that
is ahead of this replica in some partition, it builds its own response. A resumed stream
replays the recent changes as the very objects every stream got, their bytes serialized
once; an older held change is made into an object of its own, and serialized for it.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol

import grpc

from paysaga.v1 import orders_pb2
from services.common.serving.grpc_errors import abort_async
from services.order.feed import TERMINAL, OrderFeed, Watcher
from services.order.feed_changes import Change
from services.order.resume_tokens import Position, ResumeToken

#: Changes a stream writes in one turn before it lets the next stream write.
TURN_MESSAGES = 32

#: How a stream the feed ended ends: the status and what to do.
ENDED = {
    "behind": (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "this watcher fell too far behind the changes: reconnect with the last resume_token",
    ),
    "shutdown": (
        grpc.StatusCode.UNAVAILABLE,
        "the server is shutting down: reconnect, with the last resume_token, to another replica",
    ),
}


class StreamsOfProcess(Protocol):
    """What a stream needs of the process's streams (services.order.streams.WatchStreams)."""

    feed: OrderFeed
    write_timeout_s: float
    #: Responses go out as bytes (the method has no response serializer).
    writes_bytes: bool

    def read_order(self, order_id: str) -> orders_pb2.Order | None: ...

    def read_in_flight(self, user_id: int) -> list[orders_pb2.Order]: ...


class WatchStream:
    """One stream's state: where it stands in the feed and which versions the client has."""

    def __init__(
        self,
        streams: StreamsOfProcess,
        request: orders_pb2.WatchOrdersRequest,
        context: grpc.aio.ServicerContext,
        watcher: Watcher,
        token: ResumeToken | None,
    ) -> None:
        self.streams = streams
        self.feed = streams.feed
        self.request = request
        self.context = context
        self.watcher = watcher
        self.one_order = bool(request.order_id)
        self.position: Position = dict(token.position) if token else watcher.registered_at
        #: True while the stream's position is the one right after the last change this
        #: feed gave it (a new stream's always is): a change's own token then fits the
        #: stream. A resumed stream is in step once the feed has passed its token's place
        #: in every partition (another replica may have read the partitions in another
        #: interleaving); until then its token is its own, and never goes back.
        self.in_step = token is None
        #: For a watch of one order: the last version sent. Otherwise: orders sent as
        #: initial state whose change may still come on the topic.
        self.versions: dict[str, int] = dict(token.versions) if token else {}
        self.resumed = token is not None
        #: Resumed from a token issued before the initial state was all sent.
        self.resend_initial = token is not None and token.initial
        #: True while the initial state is being sent: the position stays where it began.
        self.in_initial = False

    def _is_new(self, order: orders_pb2.Order) -> bool:
        """Record a change about to be sent; False if the client already has this version
        (it was in the initial state, or it is the one order's last version sent). The feed
        sends no version twice otherwise.

        Version 0 (a change written before orders had versions) is unknown: always sent.
        """
        version = order.version
        if not version:
            return True
        known = self.versions.get(order.id, 0)
        if version <= known:
            if not self.one_order and known == version:
                del self.versions[order.id]  # its change came: no longer pending
            return False
        if self.one_order:
            self.versions[order.id] = version
        elif known:
            del self.versions[order.id]
        return True

    def _ends_here(self, order: orders_pb2.Order) -> bool:
        return self.one_order and order.status in TERMINAL and not self.request.keep_open

    async def run(self) -> None:
        if not await self._start():
            return
        try:
            if await self._follow():
                return  # the one order watched has ended
        except asyncio.CancelledError:
            if not self.watcher.cancelled_to_end:
                raise  # the call itself ended
            asyncio.current_task().uncancel()  # type: ignore[union-attr]
            if self.watcher.timed_out:
                await self._abort_slow_reader()
        await abort_async(self.context, *ENDED[self.watcher.ended or "behind"])

    async def _follow(self) -> bool:
        """Send the changes, a turn at a time: True when the one order watched has ended,
        False when the feed ended the stream."""
        watcher, turns = self.watcher, self.feed.turns
        while not watcher.ended:
            await turns.wait(watcher)
            try:
                if await self._write_turn():
                    return True
            finally:
                turns.done(watcher)
        return False

    async def _write_turn(self) -> bool:
        """Write a turn's worth of queued changes; True if the stream has ended."""
        watcher = self.watcher
        for change in watcher.take(TURN_MESSAGES):
            if watcher.ended:
                break  # the client resumes from the last token it got
            message = self._message(change)
            if message is None:
                continue
            watcher.writing_since = time.monotonic()  # the turns time it (write_timeout_s)
            try:
                await self._write(message)
            finally:
                watcher.writing_since = None
            if self._ends_here(change.order):
                return True
        return False

    def _message(self, change: Change) -> bytes | None:
        """The serialized response that sends `change` on, or None if the client has it.

        In step, the change's own bytes (serialized once by the feed); otherwise, or while
        initial-state orders are pending, this stream's own.
        """
        if not self.in_step:
            if change.offset < self.position.get(change.partition, 0):
                return None  # the token said the client has it
            self._catch_up(change.after)
        else:
            self.position = change.after
        order = change.order
        if not self._is_new(order):
            return None
        if self.in_step:
            if self.one_order:
                if order.version and len(self.versions) == 1:
                    return change.frame_for_one_order()
            elif not self.versions:
                return change.frame()
        return self._response(order, initial_state=False)

    def _catch_up(self, after: Position) -> None:
        position = self.position
        if all(after.get(p, 0) >= o for p, o in position.items()):
            self.position, self.in_step = after, True
        else:
            self.position = {p: max(o, position.get(p, 0)) for p, o in after.items()} | {
                p: o for p, o in position.items() if p not in after
            }

    async def _start(self) -> bool:
        """Send the initial state (a new stream); False if the stream has nothing more to say."""
        request = self.request
        if self.one_order:
            order = await asyncio.to_thread(self.streams.read_order, request.order_id)
            if order is None or (request.user_id and order.user_id != request.user_id):
                await abort_async(
                    self.context,
                    grpc.StatusCode.NOT_FOUND,
                    f"order {request.order_id} does not exist",
                )
            if self.resumed and not self.resend_initial:
                # The client already has the order's end: nothing more will come.
                return not (
                    self._ends_here(order) and self.versions.get(order.id, 0) >= order.version
                )
            self.versions[order.id] = order.version
            await self._send_initial(order)
            return not self._ends_here(order)
        if self.resumed and not self.resend_initial:
            return True
        orders = await asyncio.to_thread(self.streams.read_in_flight, request.user_id)
        if self.resend_initial:  # what the client got of it before is not sent again
            orders = [o for o in orders if o.version > self.versions.get(o.id, 0)]
        self.in_initial = True
        # While the initial state goes out, its token records every order sent (a resume
        # then sends only the rest); once it is all sent, the orders whose change already
        # came on the topic before the stream's place are forgotten (it will not come again).
        seen: list[orders_pb2.Order] = []
        for i, order in enumerate(orders):
            self.versions[order.id] = order.version
            if self.feed.seen_before(order, self.position):
                seen.append(order)
            if i == len(orders) - 1:
                self.in_initial = False
                for done in seen:
                    if self.versions.get(done.id) == done.version:
                        del self.versions[done.id]
            await self._send_initial(order)
        self.in_initial = False
        return True

    def subscription_token(self) -> str:
        """A new stream's token for where it starts, sent in its initial metadata, so that a
        client can resume before its first response (a watch that has had no change yet).
        Resumed from it, a stream sends every change since, and the initial state read
        again: orders still in flight that changed meanwhile come as their current state."""
        return ResumeToken(dict(self.position), {}, initial=True).encode()

    def _response(self, order: orders_pb2.Order, *, initial_state: bool) -> bytes:
        token = ResumeToken(self.position, self.versions, self.in_initial).encode()
        response = orders_pb2.WatchOrdersResponse(
            order=order, resume_token=token, initial_state=initial_state
        )
        return response.SerializeToString()

    async def _send_initial(self, order: orders_pb2.Order) -> None:
        message = self._response(order, initial_state=True)
        try:
            async with asyncio.timeout(self.streams.write_timeout_s):
                await self._write(message)
        except TimeoutError:
            await self._abort_slow_reader()

    async def _abort_slow_reader(self) -> None:
        await abort_async(
            self.context,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            f"this watcher read nothing for {self.streams.write_timeout_s:g} s: "
            "reconnect with the last resume_token",
        )

    async def _write(self, message: bytes) -> None:
        if self.streams.writes_bytes:
            await self.context.write(message)
        else:
            await self.context.write(orders_pb2.WatchOrdersResponse.FromString(message))
