"""What a caller sent comes back in an error cut to a short prefix, however long it was."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest

from paysaga.v1 import orders_pb2
from services.common.persistence.db import Database
from services.common.security.identity import LOCAL_CALLER, acting_as
from services.order.feed import OrderFeed
from services.order.models import Order
from services.order.server import OrderServicer
from services.order.streams import WatchStreams

pytestmark = pytest.mark.unit

HUGE_ORDER_ID = "9" * 60_000


class Ended(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code
        self.details = details


class FakeContext:
    """A servicer context for both kinds of method: abort ends the call with Ended."""

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Ended(code, details)


class FakeAsyncContext:
    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Ended(code, details)


def _servicer(tmp_path: Path) -> OrderServicer:
    db = Database(f"sqlite:///{tmp_path}/order.db")
    db.create_tables([Order])
    feed = OrderFeed(10, 10)
    streams = WatchStreams(
        db, feed, max_streams=1, max_streams_per_caller=1, max_streams_per_operator=1
    )
    return OrderServicer(db, streams, deadline_s=60)


def test_get_order_echoes_a_short_prefix_of_an_invalid_order_id(tmp_path: Path) -> None:
    servicer = _servicer(tmp_path)
    with acting_as(LOCAL_CALLER), pytest.raises(Ended) as ended:
        servicer.GetOrder(orders_pb2.GetOrderRequest(order_id=HUGE_ORDER_ID), FakeContext())  # type: ignore[arg-type]
    assert ended.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ended.value.details.endswith("…(60000 characters)")
    assert len(ended.value.details) < 200


def test_watch_orders_echoes_a_short_prefix_of_an_invalid_order_id(tmp_path: Path) -> None:
    servicer = _servicer(tmp_path)
    request = orders_pb2.WatchOrdersRequest(order_id=HUGE_ORDER_ID)

    async def watch() -> None:
        with acting_as(LOCAL_CALLER):
            await servicer.WatchOrders(request, FakeAsyncContext())  # type: ignore[arg-type]

    with pytest.raises(Ended) as ended:
        asyncio.run(watch())
    assert ended.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "…(60000 characters)" in ended.value.details and len(ended.value.details) < 200
