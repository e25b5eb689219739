"""One WatchOrders stream over all orders: when did each of our orders reach a terminal state."""

from __future__ import annotations

import asyncio
import time

import grpc

from paysaga.v1 import orders_pb2, orders_pb2_grpc

TERMINAL = (orders_pb2.ORDER_STATUS_COMPLETED, orders_pb2.ORDER_STATUS_FAILED)


class Terminals:
    """Follows every committed order change; resolves a future per expected request_id."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        self._stub = orders_pb2_grpc.OrderServiceStub(channel)
        self._waiting: dict[str, asyncio.Future[float]] = {}
        self._call: grpc.aio.UnaryStreamCall | None = None
        self._task: asyncio.Task[None] | None = None
        self.changes = 0
        self.completed = 0
        self.failed = 0
        self.foreign = 0
        self.error = ""

    @property
    def terminal(self) -> int:
        return self.completed + self.failed

    @property
    def pending(self) -> int:
        """Orders we expect that have not reached a terminal state yet."""
        return len(self._waiting)

    async def start(self) -> None:
        """Open the stream and wait for its headers: from then on no change is missed."""
        self._call = self._stub.WatchOrders(orders_pb2.WatchOrdersRequest())
        await self._call.initial_metadata()
        self._task = asyncio.create_task(self._read())

    def expect(self, request_id: str) -> asyncio.Future[float]:
        """A future set to the perf_counter() time the order of `request_id` turns terminal."""
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    def forget(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    async def _read(self) -> None:
        assert self._call is not None
        try:
            async for change in self._call:
                now = time.perf_counter()
                self.changes += 1
                order = change.order
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
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.error = f"WatchOrders ended: {exc.code().name} {exc.details()}"
                print(f"[watch] {self.error}", flush=True)

    async def close(self) -> None:
        if self._call is not None:
            self._call.cancel()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
