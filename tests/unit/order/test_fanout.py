"""The fan-out of WatchOrders: a change serialized once for all its watchers, published from
another thread, sent in step with the feed, resumed without a gap or a repeat.

Real WatchStreams over a real feed and a SQLite order database; the gRPC context is a
stand-in that keeps what was written (the bytes, as the server sends them).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from paysaga.v1 import orders_pb2
from services.common.persistence.db import Database
from services.common.security.identity import LOCAL_CALLER, acting_as
from services.order.feed import Change, OrderFeed
from services.order.models import Order
from services.order.resume_tokens import ResumeToken
from services.order.streams import WatchStreams

pytestmark = pytest.mark.unit


class Ended(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"{code.name}: {details}")
        self.code = code


class RecordingContext:
    """Keeps every message written, as bytes (what the server puts on the wire)."""

    def __init__(self) -> None:
        self.raw: list[bytes] = []
        self.arrived = asyncio.Event()

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Ended(code, details)

    async def send_initial_metadata(self, _metadata: Any) -> None:
        return None

    async def write(self, message: bytes) -> None:
        assert isinstance(message, bytes), "WatchOrders writes serialized responses"
        self.raw.append(message)
        self.arrived.set()

    @property
    def responses(self) -> list[orders_pb2.WatchOrdersResponse]:
        return [orders_pb2.WatchOrdersResponse.FromString(m) for m in self.raw]

    async def until(self, count: int) -> None:
        while len(self.raw) < count:
            self.arrived.clear()
            await asyncio.wait_for(self.arrived.wait(), 5)


def _order(seq: int, user: int = 1, version: int = 1) -> orders_pb2.Order:
    return orders_pb2.Order(id=f"order-{seq}", user_id=user, version=version)


def run(tmp_path: Path, body: Callable[[OrderFeed, WatchStreams], Awaitable[None]]) -> None:
    db = Database(f"sqlite:///{tmp_path}/order.db")
    db.create_tables([Order])

    async def main() -> None:
        feed = OrderFeed(100, 50)
        feed.bind(asyncio.get_running_loop())
        feed.started_threadsafe({0: 0, 1: 0})
        feed.caught_up_threadsafe()
        streams = WatchStreams(
            db, feed, max_streams=10, max_streams_per_caller=10, max_streams_per_operator=10
        )
        streams.writes_bytes = True  # as register_order_service sets it
        await body(feed, streams)

    asyncio.run(main())
    db.dispose()


async def open_stream(
    streams: WatchStreams, request: orders_pb2.WatchOrdersRequest
) -> tuple[asyncio.Task[None], RecordingContext]:
    context = RecordingContext()

    async def serve() -> None:
        with acting_as(LOCAL_CALLER):
            await streams.serve(request, context)  # type: ignore[arg-type]

    opened = streams.open
    task = asyncio.create_task(serve())
    while streams.open == opened and not task.done():
        await asyncio.sleep(0.001)
    return task, context


def publish_from_a_thread(feed: OrderFeed, changes: list[Change]) -> None:
    """As the tail does: the fan-out runs on its thread, not the loop."""
    thread = threading.Thread(target=feed.publish_threadsafe, args=(changes,))
    thread.start()
    thread.join()


def test_a_change_is_serialized_once_for_all_its_watchers() -> None:
    feed = OrderFeed(100, 10)
    feed.started_threadsafe({0: 0})
    watchers = [feed.watch(0, "", None) for _ in range(3)] + [feed.watch(7, "", None)]
    change = Change(0, 0, _order(1, user=7))
    feed._append([change])
    assert all(w.pending[0] is change for w in watchers)
    assert change.frame() is change.frame()  # built once, by the fan-out
    response = orders_pb2.WatchOrdersResponse.FromString(change.frame())
    assert response.order == change.order and not response.initial_state
    assert ResumeToken.decode(response.resume_token) == ResumeToken({0: 1})


def test_a_change_published_twice_or_late_reaches_nobody() -> None:
    feed = OrderFeed(100, 10)
    feed.started_threadsafe({0: 0})
    watcher = feed.watch(1, "", None)
    feed._append(
        [
            Change(0, 0, _order(1, version=1)),
            Change(0, 1, _order(1, version=2)),
            Change(0, 2, _order(1, version=1)),  # older, after the newer one
            Change(0, 3, _order(1, version=2)),  # published twice
            Change(0, 4, orders_pb2.Order(id="legacy", user_id=1)),  # no version: always sent
            Change(0, 5, orders_pb2.Order(id="legacy", user_id=1)),
        ]
    )
    assert [(c.order.id, c.order.version) for c in watcher.pending] == [
        ("order-1", 1),
        ("order-1", 2),
        ("legacy", 0),
        ("legacy", 0),
    ]
    assert feed.position == {0: 6}  # read past the repeats all the same


def test_streams_in_step_send_the_shared_bytes_and_resume_without_gap_or_repeat(
    tmp_path: Path,
) -> None:
    async def body(feed: OrderFeed, streams: WatchStreams) -> None:
        (first, seen), (second, other) = [
            await open_stream(streams, orders_pb2.WatchOrdersRequest()) for _ in range(2)
        ]
        changes = [Change(seq % 2, seq // 2, _order(seq)) for seq in range(6)]
        publish_from_a_thread(feed, changes)
        await seen.until(6)
        await other.until(6)
        assert [r.order.id for r in seen.responses] == [f"order-{s}" for s in range(6)]
        # One serialization per change, whatever the number of streams.
        assert all(
            a is b is c.frame() for a, b, c in zip(seen.raw, other.raw, changes, strict=True)
        )
        first.cancel()
        await asyncio.gather(first, return_exceptions=True)
        # The client saw three changes, then lost its connection: it resumes from there.
        token = seen.responses[2].resume_token
        resumed, again = await open_stream(
            streams, orders_pb2.WatchOrdersRequest(resume_token=token)
        )
        publish_from_a_thread(feed, [Change(0, 3, _order(6)), Change(1, 3, _order(7))])
        await again.until(5)
        assert [r.order.id for r in again.responses] == [f"order-{s}" for s in range(3, 8)]
        assert all(not r.initial_state for r in again.responses)
        await asyncio.sleep(0.05)
        assert len(again.raw) == 5, "nothing sent twice"
        for task in (second, resumed):
            task.cancel()
        await asyncio.gather(second, resumed, return_exceptions=True)

    run(tmp_path, body)


def test_a_token_ahead_of_this_replica_never_goes_back(tmp_path: Path) -> None:
    """Replicas may read the partitions in another interleaving: a token from one that has
    read further in partition 1 resumes here without its place there going back."""

    async def body(feed: OrderFeed, streams: WatchStreams) -> None:
        publish_from_a_thread(feed, [Change(1, 0, _order(1)), Change(1, 1, _order(2))])
        ahead = ResumeToken({0: 0, 1: 3}).encode()  # the other replica read partition 1 to 3
        task, context = await open_stream(
            streams, orders_pb2.WatchOrdersRequest(resume_token=ahead)
        )
        later = [Change(0, 0, _order(3)), Change(1, 2, _order(4)), Change(1, 3, _order(5))]
        publish_from_a_thread(feed, later)
        await context.until(2)
        assert [r.order.id for r in context.responses] == ["order-3", "order-5"]
        positions = [ResumeToken.decode(r.resume_token).position for r in context.responses]
        assert positions == [{0: 1, 1: 3}, {0: 1, 1: 4}]
        # Once the feed has passed the token everywhere, the stream is in step again.
        assert context.raw[1] is later[2].frame()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(tmp_path, body)


def test_a_watch_of_one_order_sends_its_changes_once_and_ends_with_it(tmp_path: Path) -> None:
    async def body(feed: OrderFeed, streams: WatchStreams) -> None:
        db = streams.db
        with db.write() as session:
            order = Order(user_id=1, product_id=1, price_cents=100, status="CREATED", version=1)
            session.add(order)
            session.flush()
            order_id = order.id
        task, context = await open_stream(streams, orders_pb2.WatchOrdersRequest(order_id=order_id))
        await context.until(1)  # its state
        created = orders_pb2.Order(id=order_id, user_id=1, version=1)
        done = orders_pb2.Order(
            id=order_id, user_id=1, version=2, status=orders_pb2.ORDER_STATUS_COMPLETED
        )
        changes = [Change(0, 0, created), Change(0, 1, _order(9)), Change(0, 2, done)]
        publish_from_a_thread(feed, changes)
        await asyncio.wait_for(task, 5)  # ends with the order
        versions = [r.order.version for r in context.responses]
        assert versions == [1, 2]  # version 1 came as the initial state: not again
        assert context.raw[1] is changes[2].frame_for_one_order()
        token = ResumeToken.decode(context.responses[1].resume_token)
        assert token == ResumeToken({0: 3, 1: 0}, {order_id: 2})

    run(tmp_path, body)


def test_a_resume_in_the_middle_of_the_initial_state_sends_none_of_it_twice(
    tmp_path: Path,
) -> None:
    """The first in-flight order's change came on the topic before the stream began (the
    feed has seen it); the client gets that order as initial state, then loses the call:
    resumed, it gets the rest of the initial state only."""
    db = Database(f"sqlite:///{tmp_path}/order.db")
    db.create_tables([Order])
    rows = [
        Order(user_id=1, product_id=1, price_cents=100, status="CREATED", request_id=f"r{i}")
        for i in range(2)
    ]
    with db.write() as session:
        for row in rows:
            session.add(row)
            session.flush()  # created_at in this order
    first, second = (str(row.id) for row in rows)
    db.dispose()

    async def body(feed: OrderFeed, streams: WatchStreams) -> None:
        seen_order = orders_pb2.Order(id=first, user_id=1, version=1)
        publish_from_a_thread(feed, [Change(0, 0, seen_order)])
        task, context = await open_stream(streams, orders_pb2.WatchOrdersRequest(user_id=1))
        await context.until(2)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert [r.order.id for r in context.responses] == [first, second]
        token = context.responses[0].resume_token  # lost after the first response
        resumed, again = await open_stream(
            streams, orders_pb2.WatchOrdersRequest(user_id=1, resume_token=token)
        )
        await again.until(1)
        await asyncio.sleep(0.05)
        assert [(r.order.id, r.initial_state) for r in again.responses] == [(second, True)]
        resumed.cancel()
        await asyncio.gather(resumed, return_exceptions=True)

    run(tmp_path, body)
