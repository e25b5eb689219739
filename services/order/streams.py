"""WatchOrders streams: the initial state, then changes from the feed, each with a resume token.

A new stream registers with the feed first and only then reads the current state from the
database, so no change falls between the two; a change already contained in the initial
state is not sent again (the order's version tells). A stream resumed from a token gets
the held changes after it, then live ones. The number of open streams is capped per process
and, with auth on, per caller (a token's subject; operators have an allowance of their own),
so one caller cannot take every slot; with auth off callers are not told apart and only the
process cap applies. A stream that falls behind is ended, and on shutdown every stream is
told to reconnect elsewhere.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import OrderedDict

import grpc

from paysaga.v1 import orders_pb2
from services.common.persistence.db import Database
from services.common.security.identity import LOCAL_CALLER, Caller, current_caller
from services.common.serving.grpc_errors import abort_async, echo
from services.order import store
from services.order.changes import order_to_proto
from services.order.feed import TERMINAL, OrderFeed, Watcher
from services.order.models import Order
from services.order.resume_tokens import BadResumeToken, Position, ResumeToken, ResumeTokenTooOld

log = logging.getLogger(__name__)

#: Orders whose last sent version a stream remembers (to drop a change sent before).
_RECENT_ORDERS = 10_000

_ENDED = {
    "behind": (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "this watcher fell too far behind the changes: reconnect with the last resume_token",
    ),
    "shutdown": (
        grpc.StatusCode.UNAVAILABLE,
        "the server is shutting down: reconnect, with the last resume_token, to another replica",
    ),
}


class WatchStreams:
    """The WatchOrders streams of one process."""

    def __init__(
        self,
        db: Database,
        feed: OrderFeed,
        *,
        max_streams: int,
        max_streams_per_caller: int,
        max_streams_per_operator: int,
        write_timeout_s: float = 30.0,
    ) -> None:
        self.db = db
        self.feed = feed
        self.max_streams = max_streams
        self.max_streams_per_caller = max_streams_per_caller
        self.max_streams_per_operator = max_streams_per_operator
        self.write_timeout_s = write_timeout_s
        self.open = 0
        #: Open streams by authenticated caller (their token's subject); none is kept at 0.
        self.open_by_caller: dict[str, int] = {}

    async def serve(
        self, request: orders_pb2.WatchOrdersRequest, context: grpc.aio.ServicerContext
    ) -> None:
        caller = _counted_caller()
        await self._check(request, context, caller)
        token = None
        if request.resume_token:
            try:
                token = ResumeToken.decode(request.resume_token)
            except BadResumeToken as exc:
                await abort_async(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        try:
            watcher = self.feed.watch(
                request.user_id, request.order_id, token.position if token else None
            )
        except ResumeTokenTooOld as exc:
            await abort_async(context, grpc.StatusCode.OUT_OF_RANGE, str(exc))
        # Registered: from here on no change is missed. The stream's position is taken in
        # the same step (no await between), then clients that wait for it are told.
        stream = _Stream(self, request, context, watcher, token)
        self.open += 1
        if caller is not None:
            self.open_by_caller[caller.subject] = self.open_by_caller.get(caller.subject, 0) + 1
        try:
            await context.send_initial_metadata((("paysaga-watch", "subscribed"),))
            await stream.run()
        finally:
            self.feed.unwatch(watcher)
            self.open -= 1
            if caller is not None:
                self._release(caller.subject)

    def _release(self, subject: str) -> None:
        left = self.open_by_caller[subject] - 1
        if left:
            self.open_by_caller[subject] = left
        else:
            del self.open_by_caller[subject]

    def over_allowance(self, caller: Caller) -> str | None:
        """Why `caller` may open no more streams here (their allowance is taken), or None."""
        if caller.operator:
            limit, setting = self.max_streams_per_operator, "ORDER_WATCH_MAX_STREAMS_PER_OPERATOR"
        else:
            limit, setting = self.max_streams_per_caller, "ORDER_WATCH_MAX_STREAMS_PER_CALLER"
        held = self.open_by_caller.get(caller.subject, 0)
        if held < limit:
            return None
        return (
            f"you have {held} WatchOrders streams open on this server, your limit ({setting}): "
            "close some of your streams, or watch all your orders in one (user_id without "
            "order_id)"
        )

    async def _check(
        self,
        request: orders_pb2.WatchOrdersRequest,
        context: grpc.aio.ServicerContext,
        caller: Caller | None,
    ) -> None:
        """Abort the call if it cannot be a stream here; returns without awaiting anything
        when it can, so that the counts it read are still true when serve() adds to them."""
        if request.user_id < 0:
            await abort_async(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"user_id must be positive (or 0 for any user), got {request.user_id}",
            )
        if request.order_id:
            try:
                uuid.UUID(request.order_id)
            except ValueError:
                await abort_async(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"order_id must be an order id (a UUID), got {echo(request.order_id)}",
                )
        if request.keep_open and not request.order_id:
            await abort_async(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "keep_open applies to a watch of one order: set order_id, or leave keep_open",
            )
        refusal = self.over_allowance(caller) if caller is not None else None
        if refusal is not None:
            await abort_async(context, grpc.StatusCode.RESOURCE_EXHAUSTED, refusal)
        if self.open >= self.max_streams:
            await abort_async(
                context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this server has {self.open} WatchOrders streams open, its limit "
                f"(ORDER_WATCH_MAX_STREAMS): retry later or on another replica",
            )
        if self.feed.closed:
            await abort_async(context, *_ENDED["shutdown"])
        if not self.feed.following:
            await abort_async(
                context,
                grpc.StatusCode.UNAVAILABLE,
                "this server is not yet following order changes: retry shortly",
            )

    def read_order(self, order_id: str) -> orders_pb2.Order | None:
        with self.db.read() as session:
            order = session.get(Order, order_id)
            return None if order is None else order_to_proto(order.model_dump())

    def read_in_flight(self, user_id: int) -> list[orders_pb2.Order]:
        with self.db.read() as session:
            orders = store.orders_in_flight(session, user_id=user_id)
            return [order_to_proto(o.model_dump()) for o in orders]


def _counted_caller() -> Caller | None:
    """The caller whose streams are counted: the authenticated one, None with auth off (every
    call is the same local caller then, and only the process cap applies)."""
    caller = current_caller()
    return None if caller is None or caller is LOCAL_CALLER else caller


class _Stream:
    """One stream's state: where it stands in the feed and which versions the client has."""

    def __init__(
        self,
        streams: WatchStreams,
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
        self.position: Position = dict(token.position) if token else dict(self.feed.position)
        #: For a watch of one order: the last version sent. Otherwise: orders sent as
        #: initial state whose change may still come on the topic.
        self.versions: dict[str, int] = dict(token.versions) if token else {}
        self.resumed = token is not None
        #: Resumed from a token issued before the initial state was all sent.
        self.resend_initial = token is not None and token.initial
        #: True while the initial state is being sent: the position stays where it began.
        self.in_initial = False
        #: The last version sent of recently changed orders, so a change published twice
        #: (or an older one after a newer) is not sent again. Bounded.
        self.recent: OrderedDict[str, int] = OrderedDict()

    def _is_new(self, order: orders_pb2.Order) -> bool:
        """Record a change about to be sent; False if the client already has this version.

        Version 0 (a change written before orders had versions) is unknown: always sent.
        """
        version = order.version
        if not version:
            return True
        known = max(self.versions.get(order.id, 0), self.recent.get(order.id, 0))
        if version <= known:
            if not self.one_order and self.versions.get(order.id) == version:
                del self.versions[order.id]  # its change came: no longer pending
            return False
        self.recent[order.id] = version
        self.recent.move_to_end(order.id)
        if len(self.recent) > _RECENT_ORDERS:
            self.recent.popitem(last=False)
        if self.one_order:
            self.versions[order.id] = version
        else:
            self.versions.pop(order.id, None)
        return True

    def _ends_here(self, order: orders_pb2.Order) -> bool:
        return self.one_order and order.status in TERMINAL and not self.request.keep_open

    async def run(self) -> None:
        if not await self._start():
            return
        while True:
            while self.watcher.pending:
                change = self.watcher.pending.popleft()
                if change.offset < self.position.get(change.partition, 0):
                    continue
                self.position[change.partition] = change.offset + 1
                order = change.order
                if not self._is_new(order):
                    continue
                await self._send(order, initial_state=False)
                if self._ends_here(order):
                    return
            if self.watcher.ended:
                await abort_async(self.context, *_ENDED[self.watcher.ended])
            self.watcher.wakeup.clear()
            await self.watcher.wakeup.wait()

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
            if self.resumed:
                # The client already has the order's end: nothing more will come.
                return not (
                    self._ends_here(order) and self.versions.get(order.id, 0) >= order.version
                )
            self.versions[order.id] = order.version
            await self._send(order, initial_state=True)
            return not self._ends_here(order)
        if self.resumed and not self.resend_initial:
            return True
        orders = await asyncio.to_thread(self.streams.read_in_flight, request.user_id)
        if self.resend_initial:  # what the client got of it before is not sent again
            orders = [o for o in orders if o.version > self.versions.get(o.id, 0)]
        self.in_initial = True
        for i, order in enumerate(orders):
            if not self.feed.seen_before(order, self.position):
                self.versions[order.id] = order.version
            self.in_initial = i < len(orders) - 1
            await self._send(order, initial_state=True)
        self.in_initial = False
        return True

    def _token(self) -> str:
        position = self.position
        if not self.watcher.pending and not self.in_initial:
            # Every change this stream wants up to the feed's position is sent: the token
            # may point there (and so stays resumable while the stream is quiet).
            position = {p: max(o, position.get(p, 0)) for p, o in self.feed.position.items()} | {
                p: o for p, o in position.items() if p not in self.feed.position
            }
            self.position = position
        return ResumeToken(dict(position), dict(self.versions), self.in_initial).encode()

    async def _send(self, order: orders_pb2.Order, *, initial_state: bool) -> None:
        response = orders_pb2.WatchOrdersResponse(
            order=order, resume_token=self._token(), initial_state=initial_state
        )
        try:
            async with asyncio.timeout(self.streams.write_timeout_s):  # no task per write
                await self.context.write(response)
        except TimeoutError:
            await abort_async(
                self.context,
                grpc.StatusCode.RESOURCE_EXHAUSTED,
                f"this watcher read nothing for {self.streams.write_timeout_s:g} s: "
                "reconnect with the last resume_token",
            )
