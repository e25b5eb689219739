"""WatchOrders writes bytes serialized once per change; a client of the generated stubs reads
exactly the WatchOrdersResponse it always did. A real grpc.aio server on loopback."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import grpc
import pytest

from paysaga.v1 import orders_pb2, orders_pb2_grpc
from services.common.persistence.db import Database
from services.common.security.interceptor import authenticator
from services.order.feed import Change, OrderFeed
from services.order.models import Order
from services.order.resume_tokens import ResumeToken
from services.order.server import OrderServicer, register_order_service
from services.order.streams import WatchStreams

pytestmark = pytest.mark.unit


def test_a_watcher_reads_the_response_the_generated_code_would_have_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("PAYSAGA_AUTH_ENABLED", raising=False)
    db = Database(f"sqlite:///{tmp_path}/order.db")
    db.create_tables([Order])
    feed = OrderFeed(100, 10)
    feed.started_threadsafe({0: 0, 1: 0})
    feed.caught_up_threadsafe()
    streams = WatchStreams(
        db, feed, max_streams=10, max_streams_per_caller=10, max_streams_per_operator=10
    )
    servicer = OrderServicer(db, streams, deadline_s=60)
    order = orders_pb2.Order(
        id="a3f1c2d4-0000-4000-8000-000000000001",
        user_id=1,
        product_id=2,
        price_cents=5000,
        status=orders_pb2.ORDER_STATUS_COMPLETED,
        version=2,
    )

    async def main() -> None:
        server = grpc.aio.server(interceptors=[authenticator()])
        register_order_service(server, servicer)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        feed.bind(asyncio.get_running_loop())
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = orders_pb2_grpc.OrderServiceStub(channel)
                call = stub.WatchOrders(orders_pb2.WatchOrdersRequest(user_id=1))
                await call.initial_metadata()
                tail = threading.Thread(
                    target=feed.publish_threadsafe, args=([Change(1, 0, order)],)
                )
                tail.start()
                tail.join()
                response = await asyncio.wait_for(call.read(), 5)
                call.cancel()
                # The other methods are registered as the generated code does.
                listed = await stub.ListOrders(orders_pb2.ListOrdersRequest(user_id=1))
        finally:
            await server.stop(None)
        assert response == orders_pb2.WatchOrdersResponse(
            order=order, resume_token=ResumeToken({0: 0, 1: 1}).encode()
        )
        assert list(listed.orders) == []

    asyncio.run(main())
    assert streams.writes_bytes
    db.dispose()
