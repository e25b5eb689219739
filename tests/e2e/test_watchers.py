"""Thousands of WatchOrders streams on one real Order process, the stream cap, and drain."""

from __future__ import annotations

import asyncio
import signal
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.stack.stack import Stack
from paysaga.v1 import orders_pb2, orders_pb2_grpc
from tests.e2e.conftest import GrpcurlStack, running

STREAMS = 5000
CHANNELS = 50  # 100 streams per connection
GRACE_S = 5.0
DRAIN_S = 0.5


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory, grpcurl_binary: str) -> Iterator[GrpcurlStack]:
    """A stack whose Order process takes at most STREAMS streams and stops within GRACE_S."""
    env = {
        "ORDER_WATCH_MAX_STREAMS": str(STREAMS),
        "ORDER_SHUTDOWN_GRACE_S": str(GRACE_S),
        "ORDER_SHUTDOWN_DRAIN_S": str(DRAIN_S),
    }
    home = tmp_path_factory.mktemp("watchers")
    with running(Stack(home, ports="free", detach=False, env=env), grpcurl_binary) as started:
        yield started


async def _open_streams(address: str, count: int) -> tuple[list[grpc.aio.Channel], list[object]]:
    channels = [grpc.aio.insecure_channel(address) for _ in range(CHANNELS)]
    calls = []
    for i in range(count):
        stub = orders_pb2_grpc.OrderServiceStub(channels[i % CHANNELS])
        calls.append(stub.WatchOrders(orders_pb2.WatchOrdersRequest(user_id=1 + i % 5)))
    # Headers mean subscribed; the first user-1 streams also get their initial state.
    await asyncio.gather(*(call.initial_metadata() for call in calls))  # type: ignore[attr-defined]
    return channels, calls


async def _close(channels: list[grpc.aio.Channel], calls: list[object]) -> None:
    for call in calls:
        call.cancel()  # type: ignore[attr-defined]
    await asyncio.gather(*(channel.close() for channel in channels))


def test_5000_streams_leave_create_order_and_health_answering(capped: GrpcurlStack) -> None:
    address = capped.stack.order_address

    async def scenario() -> None:
        channels, calls = await _open_streams(address, STREAMS)
        try:
            stub = orders_pb2_grpc.OrderServiceStub(channels[0])
            # One more stream than the cap: refused, with a message that says so.
            extra = stub.WatchOrders(orders_pb2.WatchOrdersRequest(user_id=1))
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await extra.read()
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "ORDER_WATCH_MAX_STREAMS" in (refused.value.details() or "")
            # Unary calls and health answer (within a deadline that a starved server misses).
            health = health_pb2_grpc.HealthStub(channels[1])
            checked = await health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert checked.status == health_pb2.HealthCheckResponse.SERVING
            created = await stub.CreateOrder(
                orders_pb2.CreateOrderRequest(
                    user_id=1, product_id=1, request_id=str(uuid.uuid4())
                ),
                timeout=10,
            )
            # And the streams still work: one of user 1's streams sees the order end.
            watcher = calls[0]
            while True:
                change = await watcher.read()  # type: ignore[attr-defined]
                if change.order.id == created.order.id and change.order.status in (
                    orders_pb2.ORDER_STATUS_COMPLETED,
                    orders_pb2.ORDER_STATUS_FAILED,
                ):
                    break
        finally:
            await _close(channels, calls)

    asyncio.run(asyncio.wait_for(scenario(), 300))


def test_sigterm_ends_streams_with_a_reconnect_status_and_exits_within_the_grace(
    capped: GrpcurlStack,
) -> None:
    process = capped.stack.process("order")
    address = capped.stack.order_address

    async def scenario() -> list[grpc.aio.AioRpcError]:
        channels, calls = await _open_streams(address, 20)
        try:
            pid = process.signal(signal.SIGTERM)
            assert pid is not None
            ended = []
            for call in calls:
                with pytest.raises(grpc.aio.AioRpcError) as error:
                    while True:
                        await call.read()  # type: ignore[attr-defined]
                ended.append(error.value)
            return ended
        finally:
            await _close(channels, calls)

    started = time.monotonic()
    ended = asyncio.run(asyncio.wait_for(scenario(), 60))
    assert {e.code() for e in ended} == {grpc.StatusCode.UNAVAILABLE}
    assert all("reconnect" in (e.details() or "") for e in ended)
    pid_gone = process.wait_exit(int(process.pid_file.read_text()), 2 * GRACE_S + DRAIN_S + 5)
    assert pid_gone, f"the order process did not exit after {time.monotonic() - started:.1f} s"
    capped.stack.start_services()  # leave the stack as found
