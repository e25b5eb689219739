"""WatchOrders streams per caller: one caller's allowance taken leaves the others theirs.

Real WatchStreams over a real feed and a SQLite order database; the gRPC context is a
stand-in that records how a call was ended. Streams run as tasks until cancelled, as a
client holding them open would.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from paysaga.v1 import orders_pb2
from services.common.persistence.db import Database
from services.common.security.identity import LOCAL_CALLER, Caller, acting_as
from services.order.feed import OrderFeed
from services.order.models import Order
from services.order.streams import WatchStreams

pytestmark = pytest.mark.unit


class Ended(Exception):
    """The call was ended with a status (what grpc.aio's abort does)."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class FakeContext:
    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Ended(code, details)

    async def send_initial_metadata(self, _metadata: Any) -> None:
        return None

    async def write(self, _response: Any) -> None:
        return None


def user(user_id: int) -> Caller:
    return Caller(subject=str(user_id), user_id=user_id, operator=False)


OPERATOR = Caller(subject="ops", user_id=None, operator=True)


def run(tmp_path: Path, body: Callable[[WatchStreams], Awaitable[None]], **caps: int) -> None:
    db = Database(f"sqlite:///{tmp_path}/order.db")
    db.create_tables([Order])

    async def main() -> None:
        feed = OrderFeed(100, 10)
        feed.started_threadsafe({0: 0})
        feed.caught_up_threadsafe()
        limits = {"max_streams": 10, "max_streams_per_caller": 2, "max_streams_per_operator": 3}
        streams = WatchStreams(db, feed, **(limits | caps))
        await body(streams)

    asyncio.run(main())
    db.dispose()


async def open_stream(streams: WatchStreams, caller: Caller, user_id: int) -> asyncio.Task[None]:
    """A stream of `user_id`'s orders opened by `caller`, held open; wait until it counts."""

    async def serve() -> None:
        with acting_as(caller):
            await streams.serve(orders_pb2.WatchOrdersRequest(user_id=user_id), FakeContext())  # type: ignore[arg-type]

    task = asyncio.create_task(serve())
    opened = streams.open
    for _ in range(200):
        await asyncio.sleep(0.005)
        if task.done() or streams.open > opened:
            break
    if task.done():
        task.result()  # raises Ended
    return task


async def refusal(streams: WatchStreams, caller: Caller, user_id: int) -> Ended:
    with pytest.raises(Ended) as ended:
        await open_stream(streams, caller, user_id)
    return ended.value


async def close(*tasks: asyncio.Task[None]) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def test_a_caller_over_their_allowance_is_refused_and_another_caller_is_not(
    tmp_path: Path,
) -> None:
    async def body(streams: WatchStreams) -> None:
        held = [await open_stream(streams, user(2), 2) for _ in range(2)]
        ended = await refusal(streams, user(2), 2)
        assert ended.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "ORDER_WATCH_MAX_STREAMS_PER_CALLER" in ended.details
        assert "close some of your streams" in ended.details
        other = await open_stream(streams, user(3), 3)  # user 3 still gets one
        assert streams.open_by_caller == {"2": 2, "3": 1}
        await close(held[0])
        again = await open_stream(streams, user(2), 2)  # a slot given back is theirs again
        await close(held[1], other, again)
        assert streams.open == 0 and streams.open_by_caller == {}

    run(tmp_path, body)


def test_an_operator_has_an_allowance_of_their_own(tmp_path: Path) -> None:
    async def body(streams: WatchStreams) -> None:
        held = [await open_stream(streams, OPERATOR, 0) for _ in range(3)]
        ended = await refusal(streams, OPERATOR, 0)
        assert "ORDER_WATCH_MAX_STREAMS_PER_OPERATOR" in ended.details
        await close(*held)

    run(tmp_path, body)


def test_with_auth_off_only_the_process_cap_applies(tmp_path: Path) -> None:
    async def body(streams: WatchStreams) -> None:
        held = [await open_stream(streams, LOCAL_CALLER, 2) for _ in range(4)]
        assert streams.open_by_caller == {}  # callers are not told apart
        ended = await refusal(streams, LOCAL_CALLER, 2)
        assert "ORDER_WATCH_MAX_STREAMS)" in ended.details
        await close(*held)

    run(tmp_path, body, max_streams=4)


def test_the_process_cap_still_holds_below_every_allowance(tmp_path: Path) -> None:
    async def body(streams: WatchStreams) -> None:
        held = [await open_stream(streams, user(n), n) for n in (2, 3, 4)]
        ended = await refusal(streams, user(5), 5)
        assert "ORDER_WATCH_MAX_STREAMS)" in ended.details
        await close(*held)

    run(tmp_path, body, max_streams=3)
