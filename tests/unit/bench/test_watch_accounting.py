"""The bench's watcher accounting: every change of a watched order counted once per stream,
and each way a delivery can go wrong (missed, sent twice, sent to the wrong stream) seen."""

from __future__ import annotations

import asyncio

import pytest

from bench.watch_accounting import ALL_USERS, Receipts, Truth, account, expected_deliveries
from bench.watchers import Streams
from paysaga.v1 import orders_pb2

pytestmark = pytest.mark.unit

#: Streams 0 and 1 watch user 1, stream 2 user 2, stream 3 every order.
WATCHING = [1, 1, 2, ALL_USERS]


def deliver(receipts: Receipts, order_id: str, versions: range, streams: list[int]) -> None:
    for stream in streams:
        for version in versions:
            receipts.add(stream, order_id, version)


def two_orders() -> Truth:
    """Order a (user 1) reached version 2, order b (user 2) version 3."""
    truth = Truth()
    truth.note("a", 1, 1)
    truth.note("a", 1, 2)
    truth.note("b", 2, 3)
    truth.note("b", 2, 1)  # an older sighting does not lower the newest version
    return truth


def test_every_change_once_on_every_watching_stream_is_clean() -> None:
    truth = two_orders()
    receipts = Receipts(len(WATCHING))
    deliver(receipts, "a", range(1, 3), [0, 1, 3])
    deliver(receipts, "b", range(1, 4), [2, 3])
    checked = account(truth.orders, WATCHING, receipts)
    # a: 2 changes x 3 streams; b: 3 changes x 2 streams.
    assert checked.as_dict() == {
        "missed_examples": [],
        "orders": 2,
        "changes": 5,
        "expected": 12,
        "delivered": 12,
        "missed": 0,
        "duplicated": 0,
        "misrouted": 0,
    }
    assert expected_deliveries(truth.orders, WATCHING, receipts) == 12
    assert receipts.received(truth.orders) == 12


def test_a_gap_a_never_seen_change_and_a_resent_one_are_counted() -> None:
    truth = two_orders()
    receipts = Receipts(len(WATCHING))
    deliver(receipts, "a", range(1, 3), [0, 3])
    deliver(receipts, "a", range(2, 3), [1])  # stream 1 missed version 1 of a
    deliver(receipts, "a", range(2, 3), [0])  # and stream 0 got version 2 twice
    deliver(receipts, "b", range(1, 3), [2, 3])  # version 3 of b reached no stream
    checked = account(truth.orders, WATCHING, receipts)
    assert (checked.missed, checked.duplicated, checked.misrouted) == (1 + 2, 1, 0)
    assert checked.delivered == 5 + 1 + 4
    assert checked.missed_examples == [(1, "a", 1), (2, "b", 3), (3, "b", 3)]


def test_a_newer_version_seen_only_by_a_stream_is_expected_of_every_watcher() -> None:
    truth = two_orders()
    receipts = Receipts(len(WATCHING))
    deliver(receipts, "a", range(1, 4), [0])  # version 3 (e.g. a refund note): stream 0 only
    deliver(receipts, "a", range(1, 3), [1, 3])
    deliver(receipts, "b", range(1, 4), [2, 3])
    checked = account(truth.orders, WATCHING, receipts)
    assert (checked.changes, checked.missed, checked.duplicated) == (6, 2, 0)


def test_a_change_on_a_stream_of_another_user_is_misrouted() -> None:
    truth = two_orders()
    receipts = Receipts(len(WATCHING))
    deliver(receipts, "a", range(1, 3), [0, 1, 3])
    deliver(receipts, "b", range(1, 4), [2, 3])
    receipts.add(0, "b", 2)  # stream 0 watches user 1, b is user 2's
    checked = account(truth.orders, WATCHING, receipts)
    assert (checked.missed, checked.duplicated, checked.misrouted) == (0, 0, 1)
    assert checked.delivered == 13


def test_orders_outside_the_phase_and_streams_that_never_opened_are_left_out() -> None:
    truth = Truth()
    truth.note("a", 1, 1)
    receipts = Receipts(3)
    receipts.add(0, "a", 1)
    receipts.add(0, "earlier", 1)  # an order the phase did not make
    receipts.add(1, "earlier", 2)
    checked = account(truth.orders, [1, -1, ALL_USERS], receipts)  # stream 1 never opened
    assert (checked.expected, checked.delivered, checked.missed) == (2, 1, 1)
    assert receipts.received(truth.orders) == 1


def test_an_order_made_before_the_initial_state_was_read_counts_once_as_initial_state() -> None:
    async def stream_receiving() -> None:  # the streams' channels want a running loop
        streams = Streams(["127.0.0.1:1"], count=1, channels=1, scope="all", prefix="bench-")
        try:
            check(streams)
        finally:
            for channel in streams.channels:
                await channel.close()

    def check(streams: Streams) -> None:
        receipts = streams.receipts
        order = orders_pb2.Order(id="a", user_id=1, request_id="bench-1", version=1)
        streams._receive(0, orders_pb2.WatchOrdersResponse(order=order, initial_state=True))
        order.version = 2
        streams._receive(0, orders_pb2.WatchOrdersResponse(order=order))
        other = orders_pb2.Order(id="x", user_id=1, request_id="someone-else", version=1)
        streams._receive(0, orders_pb2.WatchOrdersResponse(order=other, initial_state=True))
        # Another order already at version 2 when the initial state was read: version 1 is
        # superseded, not missed; a copy of it sent later would be a duplicate.
        done = orders_pb2.Order(id="b", user_id=1, request_id="bench-2", version=2)
        streams._receive(0, orders_pb2.WatchOrdersResponse(order=done, initial_state=True))

        truth = Truth()
        truth.note("a", 1, 2)
        truth.note("b", 1, 2)
        checked = account(truth.orders, [ALL_USERS], receipts)
        assert checked.missed == 0 and checked.duplicated == 0
        assert streams.initial_state == 3

        done.version = 1
        streams._receive(0, orders_pb2.WatchOrdersResponse(order=done))
        assert account(truth.orders, [ALL_USERS], receipts).duplicated == 1

    asyncio.run(stream_receiving())
