"""WatchOrders streams: the initial state, then changes from the feed, each with a resume token.

A new stream registers with the feed first and only then reads the current state from the
database, so no change falls between the two; a change already contained in the initial
state is not sent again (the order's version tells). A stream resumed from a token gets
the held changes after it, then live ones. The number of open streams is capped per process
and, with auth on, per caller (a token's subject; operators have an allowance of their own),
so one caller cannot take every slot; with auth off callers are not told apart and only the
process cap applies. A stream that falls behind is ended, and on shutdown every stream is
told to reconnect elsewhere.

Each stream is a WatchStream (services.order.watch_stream). The feed fans changes out on
its own thread and serializes each once for all its watchers (services.order.feed); the
streams write in turns (services.order.write_turns), so unary calls never wait behind a
fan-out.
"""

from __future__ import annotations

import asyncio
import logging
import uuid

import grpc

from paysaga.v1 import orders_pb2
from services.common.persistence.db import Database
from services.common.security.identity import LOCAL_CALLER, Caller, current_caller
from services.common.serving.grpc_errors import abort_async, echo
from services.order import store
from services.order.changes import order_to_proto
from services.order.feed import OrderFeed
from services.order.models import Order
from services.order.resume_tokens import (
    RESUME_TOKEN_KEY,
    BadResumeToken,
    ResumeToken,
    ResumeTokenTooOld,
)
from services.order.watch_stream import ENDED, WatchStream

log = logging.getLogger(__name__)


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
        self.write_timeout_s = feed.turns.write_timeout_s = write_timeout_s
        #: Set when WatchOrders is registered with no response serializer
        #: (services.order.server.register_order_service): responses go out as the bytes
        #: serialized once per change. Otherwise each is parsed back into a message.
        self.writes_bytes = False
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
        # Registered: from here on no change is missed (the feed took the stream's position
        # in the same step), and clients that wait for it are told.
        watcher.task = asyncio.current_task()
        stream = WatchStream(self, request, context, watcher, token)
        self.open += 1
        if caller is not None:
            self.open_by_caller[caller.subject] = self.open_by_caller.get(caller.subject, 0) + 1
        try:
            subscribed = [("paysaga-watch", "subscribed")]
            if token is None:  # a resumed client holds its token already (and it may be big)
                subscribed.append((RESUME_TOKEN_KEY, stream.subscription_token()))
            await context.send_initial_metadata(subscribed)
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
            await abort_async(context, *ENDED["shutdown"])
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
