"""Turns to write: a few streams write at a time, slow clients give their turn up and are
ended, with a status that says to resume, while the others go on.

Real WatchStreams, feed and turns on SQLite; the gRPC context is a stand-in whose writes
wait until the test lets them through (a client that reads, or one that does not).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from paysaga.v1 import orders_pb2
from services.common.persistence.db import Database
from services.common.security.identity import LOCAL_CALLER, acting_as
from services.order.feed import Change, OrderFeed, Watcher
from services.order.models import Order
from services.order.streams import WatchStreams
from services.order.write_turns import WriteTurns

pytestmark = pytest.mark.unit


class Ended(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code
        self.details = details


class ClientContext:
    """A client whose reads the test controls: each write waits until `reading` is set."""

    writing: set[ClientContext] = set()

    def __init__(self) -> None:
        self.reading = asyncio.Event()
        self.written = 0

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Ended(code, details)

    async def send_initial_metadata(self, _metadata: Any) -> None:
        return None

    async def write(self, _message: bytes) -> None:
        ClientContext.writing.add(self)
        try:
            await self.reading.wait()
        finally:
            ClientContext.writing.discard(self)
        self.written += 1


Body = Callable[[OrderFeed, WatchStreams], Awaitable[None]]


def run(tmp_path: Path, body: Body, *, max_backlog: int = 50, write_timeout_s: float = 30) -> None:
    db = Database(f"sqlite:///{tmp_path}/order.db")
    db.create_tables([Order])

    async def main() -> None:
        feed = OrderFeed(100, max_backlog)
        feed.started_threadsafe({0: 0})
        feed.caught_up_threadsafe()
        streams = WatchStreams(
            db,
            feed,
            max_streams=20,
            max_streams_per_caller=20,
            max_streams_per_operator=20,
            write_timeout_s=write_timeout_s,
        )
        streams.writes_bytes = True
        ClientContext.writing.clear()
        await body(feed, streams)

    asyncio.run(main())
    db.dispose()


async def open_streams(
    streams: WatchStreams, count: int
) -> list[tuple[asyncio.Task[None], ClientContext]]:
    opened: list[tuple[asyncio.Task[None], ClientContext]] = []
    for _ in range(count):
        context = ClientContext()

        async def serve(context: ClientContext = context) -> None:
            with acting_as(LOCAL_CALLER):
                await streams.serve(orders_pb2.WatchOrdersRequest(), context)  # type: ignore[arg-type]

        task = asyncio.create_task(serve())
        while streams.open == len(opened):
            await asyncio.sleep(0.001)
        opened.append((task, context))
    await asyncio.sleep(0.01)  # each now waits for changes
    return opened


def publish(feed: OrderFeed, first: int, count: int) -> None:
    changes = [
        Change(0, offset, orders_pb2.Order(id=f"order-{offset}", user_id=1, version=1))
        for offset in range(first, first + count)
    ]
    woken = feed._append(changes)  # the fan-out thread's part, then the loop's
    feed.turns.ready(woken)


async def settle() -> None:
    for _ in range(20):
        await asyncio.sleep(0)


async def until(done: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Let the loop run until `done()` (the streams read their initial state on worker
    threads, which a busy machine may delay), then settle."""
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        await asyncio.sleep(0.002)
    await settle()


async def ended_with(task: asyncio.Task[None]) -> Ended:
    with pytest.raises(Ended) as ended:
        await asyncio.wait_for(task, 5)
    return ended.value


def test_at_most_max_writing_streams_write_at_once_and_every_one_gets_its_turn(
    tmp_path: Path,
) -> None:
    async def body(feed: OrderFeed, streams: WatchStreams) -> None:
        feed.turns.max_writing = 2
        opened = await open_streams(streams, 5)
        publish(feed, 0, 3)
        await until(lambda: len(ClientContext.writing) >= 2)
        assert len(ClientContext.writing) == 2
        for _, context in opened:  # every client reads again
            context.reading.set()
        for _ in range(200):
            await asyncio.sleep(0.005)
            assert feed.turns.writing <= 2
            if all(context.written == 3 for _, context in opened):
                break
        assert [context.written for _, context in opened] == [3] * 5
        for task, _ in opened:
            task.cancel()
        await asyncio.gather(*(task for task, _ in opened), return_exceptions=True)

    run(tmp_path, body)


def test_clients_that_read_nothing_give_their_turn_up(tmp_path: Path) -> None:
    async def body(feed: OrderFeed, streams: WatchStreams) -> None:
        feed.turns.max_writing = 2
        feed.turns.max_turn_s = 0.02
        stuck = await open_streams(streams, 2)
        publish(feed, 0, 1)
        await until(lambda: len(ClientContext.writing) >= 2)
        assert {context for _, context in stuck} == ClientContext.writing
        reading = await open_streams(streams, 3)  # opened after: queued behind the stuck
        for _, context in reading:
            context.reading.set()
        publish(feed, 1, 1)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if all(context.written == 1 for _, context in reading):
                break
        assert [context.written for _, context in reading] == [1, 1, 1]
        for task, _ in stuck + reading:
            task.cancel()
        await asyncio.gather(*(task for task, _ in stuck + reading), return_exceptions=True)

    run(tmp_path, body)


def test_a_client_that_reads_nothing_is_ended_once_too_far_behind(tmp_path: Path) -> None:
    async def body(feed: OrderFeed, streams: WatchStreams) -> None:
        feed.turns.max_turn_s = 0.02
        [(task, _context)] = await open_streams(streams, 1)
        publish(feed, 0, 1)  # its write waits
        await asyncio.sleep(0.1)
        publish(feed, 1, 4)  # one more than its backlog may hold
        ended = await ended_with(task)
        assert ended.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "reconnect with the last resume_token" in ended.details

    run(tmp_path, body, max_backlog=3)


def test_a_write_that_waits_longer_than_the_write_timeout_ends_the_stream(tmp_path: Path) -> None:
    async def body(feed: OrderFeed, streams: WatchStreams) -> None:
        feed.turns.max_turn_s = 0.02
        [(task, _context)] = await open_streams(streams, 1)
        publish(feed, 0, 1)
        ended = await ended_with(task)
        assert ended.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "read nothing for 0.2 s" in ended.details

    run(tmp_path, body, write_timeout_s=0.2)


def test_shutdown_ends_streams_whose_writes_wait_with_a_reconnect_status(tmp_path: Path) -> None:
    async def body(feed: OrderFeed, streams: WatchStreams) -> None:
        feed.turns.max_turn_s = 0.02
        opened = await open_streams(streams, 3)
        publish(feed, 0, 1)
        await asyncio.sleep(0.1)
        feed.close()
        for task, _ in opened:
            ended = await ended_with(task)
            assert ended.code == grpc.StatusCode.UNAVAILABLE
            assert "reconnect" in ended.details

    run(tmp_path, body)


def test_a_stream_whose_call_ends_as_it_is_given_a_turn_gives_the_turn_back() -> None:
    async def main() -> None:
        turns = WriteTurns(max_writing=1)
        watcher, other = Watcher(0, "", 10), Watcher(0, "", 10)
        waiting = asyncio.create_task(turns.wait(watcher))
        await asyncio.sleep(0)  # it waits for changes
        watcher.pending.append(Change(0, 0, orders_pb2.Order(id="a", version=1)))
        turns.ready([watcher])  # given the turn...
        waiting.cancel()  # ...its call ends before it runs again
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert turns.writing == 0
        other.pending.append(Change(0, 1, orders_pb2.Order(id="b", version=1)))
        await asyncio.wait_for(turns.wait(other), 1)  # the turn is there for the next one
        assert turns.writing == 1

    asyncio.run(main())


def test_a_stream_ended_during_its_turn_stops_after_the_write_under_way(tmp_path: Path) -> None:
    async def body(feed: OrderFeed, streams: WatchStreams) -> None:
        feed.turns.max_turn_s = 10  # its turn is not taken back: only `ended` stops it
        [(task, context)] = await open_streams(streams, 1)
        publish(feed, 0, 3)
        await settle()
        assert ClientContext.writing == {context}
        feed.close()
        context.reading.set()
        ended = await ended_with(task)
        assert ended.code == grpc.StatusCode.UNAVAILABLE
        assert context.written == 1  # the other two come from the next replica, resumed

    run(tmp_path, body)
