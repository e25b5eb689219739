"""One WatchOrders stream over all orders: when did each of our orders reach a terminal state."""

from __future__ import annotations

import asyncio
import time

import grpc

from bench.watch_accounting import Truth
from paysaga.v1 import orders_pb2, orders_pb2_grpc

TERMINAL = (orders_pb2.ORDER_STATUS_COMPLETED, orders_pb2.ORDER_STATUS_FAILED)

#: Stream ends after which the watcher reconnects with its last resume token (the server
#: ended a watcher that fell behind, or a replica drained): no change is lost across them.
RECONNECT_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
MAX_RECONNECTS = 20


class Terminals:
    """Follows every committed order change; resolves a future per expected request_id.

    The stream first sends the orders in flight (`initial_state`): they are counted but do
    not time anything, since they are not changes seen as they happened.
    """

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = orders_pb2_grpc.OrderServiceStub(channel)
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._call: grpc.aio.UnaryStreamCall | None = None
        self._task: asyncio.Task[None] | None = None
        self._token = ""
        self._closing = False
        self.changes = 0
        self.initial_state = 0
        self.completed = 0
        self.failed = 0
        self.foreign = 0
        self.reconnects = 0
        self.error = ""
        #: While a phase accounts its watchers' deliveries: its request-id prefix, and the
        #: newest version seen of each of its orders.
        self._tracked: tuple[str, Truth] | None = None

    @property
    def terminal(self) -> int:
        return self.completed + self.failed

    @property
    def pending(self) -> int:
        """Orders we expect that have not reached a terminal state yet."""
        return len(self._waiting)

    async def start(self) -> None:
        """Open the stream and wait for its headers: from then on no change is missed."""
        await self._open()
        self._task = asyncio.create_task(self._read())

    async def _open(self) -> None:
        request = orders_pb2.WatchOrdersRequest(resume_token=self._token)
        self._call = self._stub.WatchOrders(request)
        await self._call.initial_metadata()

    def expect(self, request_id: str) -> asyncio.Future[float]:
        """A future set to the perf_counter() time the order of `request_id` turns terminal."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    def track(self, prefix: str, truth: Truth | None) -> None:
        """Note in `truth` every change of the orders whose request_id starts with `prefix`
        (None: stop)."""
        self._tracked = None if truth is None else (prefix, truth)

    async def _read(self) -> None:
        while True:
            try:
                await self._follow()
                return
            except grpc.aio.AioRpcError as exc:
                if self._closing or exc.code() == grpc.StatusCode.CANCELLED:
                    return
                ended = f"WatchOrders ended: {exc.code().name} {exc.details()}"
                if exc.code() not in RECONNECT_CODES or self.reconnects >= MAX_RECONNECTS:
                    self.error = ended
                    print(f"[watch] {self.error}", flush=True)
                    return
                self.reconnects += 1
                print(f"[watch] {ended}; reconnecting with the last resume_token", flush=True)
                await asyncio.sleep(min(2.0, 0.1 * self.reconnects))
                try:
                    await self._open()
                except grpc.aio.AioRpcError as again:
                    self.error = f"WatchOrders resume failed: {again.code().name} {again.details()}"
                    print(f"[watch] {self.error}", flush=True)
                    return

    async def _follow(self) -> None:
        assert self._call is not None
        async for response in self._call:
            now = time.perf_counter()
            self._token = response.resume_token
            if response.initial_state:
                self.initial_state += 1
                continue
            self.changes += 1
            order = response.order
            if self._tracked is not None and order.request_id.startswith(self._tracked[0]):
                self._tracked[1].note(order.id, order.user_id, order.version)
            if order.status not in TERMINAL:
                continue
            future = self._waiting.pop(order.request_id, None)
            if future is None:
                self.foreign += 1
                continue
            if order.status == orders_pb2.ORDER_STATUS_COMPLETED:
                self.completed += 1
            else:
                self.failed += 1
            if not future.done():
                future.set_result(now)

    def report(self) -> dict[str, int | str]:
        return {
            "changes": self.changes,
            "initial_state": self.initial_state,
            "foreign_terminal": self.foreign,
            "reconnects": self.reconnects,
            "error": self.error,
        }

    async def close(self) -> None:
        self._closing = True
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
