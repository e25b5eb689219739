"""The bench's channel to N replicas: one target listing them all, calls spread round robin."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import grpc
import pytest

from bench.balancing import ROUND_ROBIN, balanced_channel, split_addresses, target

pytestmark = pytest.mark.unit


def test_a_target_lists_every_replica_and_refuses_host_names() -> None:
    assert target(["127.0.0.1:50051"]) == "127.0.0.1:50051"
    assert target(split_addresses("127.0.0.1:50051, 127.0.0.1:50151,")) == (
        "ipv4:127.0.0.1:50051,127.0.0.1:50151"
    )
    with pytest.raises(ValueError, match="order-1:50051"):
        target(["127.0.0.1:50051", "order-1:50051"])
    with pytest.raises(ValueError, match="at least one"):
        target([])
    assert json.loads(ROUND_ROBIN) == {"loadBalancingConfig": [{"round_robin": {}}]}


async def _calls_per_server(calls: int) -> list[int]:
    counts = [0, 0]
    servers, addresses = [], []
    for index in range(2):

        async def echo(request: bytes, _context: Any, index: int = index) -> bytes:
            counts[index] += 1
            return request

        server = grpc.aio.server()
        handler = grpc.unary_unary_rpc_method_handler(echo)
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler("test.Echo", {"Echo": handler}),)
        )
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        addresses.append(f"127.0.0.1:{port}")
    try:
        async with balanced_channel(addresses) as channel:
            call = channel.unary_unary("/test.Echo/Echo")
            await channel.channel_ready()
            # Both subchannels connect in the background; give the second one its moment.
            for _ in range(50):
                await call(b"warm", timeout=5)
                if all(counts):
                    break
                await asyncio.sleep(0.02)
            counts[:] = [0, 0]
            for _ in range(calls):
                await call(b"ping", timeout=5)
    finally:
        await asyncio.gather(*(server.stop(None) for server in servers))
    return counts


def test_calls_are_spread_over_every_replica() -> None:
    counts = asyncio.run(_calls_per_server(20))
    assert counts == [10, 10], f"round_robin should alternate between the replicas: {counts}"
