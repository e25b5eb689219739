"""The order feed behind WatchOrders: fan-out, resuming, history limits, slow watchers."""

from __future__ import annotations

import asyncio
import gc
from collections import deque

import pytest

from paysaga.v1 import orders_pb2
from services.order.feed import Change, OrderFeed
from services.order.resume_tokens import ResumeTokenTooOld

pytestmark = pytest.mark.unit


def _change(partition: int, offset: int, order_id: str, user: int, version: int = 1) -> Change:
    return Change(partition, offset, orders_pb2.Order(id=order_id, user_id=user, version=version))


def _feed(history_size: int = 100, max_backlog: int = 10) -> OrderFeed:
    feed = OrderFeed(history_size, max_backlog)
    feed.started_threadsafe({0: 0, 1: 0})
    feed.caught_up_threadsafe()
    return feed


def _keeping_objects(feed: OrderFeed, changes: int) -> OrderFeed:
    """`feed`, keeping only its last `changes` changes as objects as well as held."""
    feed._recent = deque(maxlen=changes)
    return feed


def _in_loop(test: object) -> None:
    """Run a test body on an event loop, as the feed's callers on the loop do."""

    async def body() -> None:
        test()  # type: ignore[operator]

    asyncio.run(body())


def test_changes_reach_only_the_watchers_that_want_them() -> None:
    def body() -> None:
        feed = _feed()
        everyone = feed.watch(0, "", None)
        user_7 = feed.watch(7, "", None)
        order_a = feed.watch(0, "a", None)
        feed._append([_change(0, 0, "a", 7), _change(1, 0, "b", 8)])
        assert [c.order.id for c in everyone.pending] == ["a", "b"]
        assert [c.order.id for c in user_7.pending] == ["a"]
        assert [c.order.id for c in order_a.pending] == ["a"]
        feed.unwatch(user_7)
        feed._append([_change(0, 1, "c", 7)])
        assert [c.order.id for c in user_7.pending] == ["a"]
        assert feed.watchers == 2

    _in_loop(body)


def test_a_resumed_watch_gets_the_held_changes_after_its_position() -> None:
    def body() -> None:
        feed = _feed()
        feed._append([_change(p, o, f"{p}-{o}", 1) for o in range(5) for p in (0, 1)])
        watcher = feed.watch(1, "", {0: 3, 1: 5})
        assert [c.order.id for c in watcher.pending] == ["0-3", "0-4"]

    _in_loop(body)


def test_the_history_holds_plain_values_the_garbage_collector_leaves_alone() -> None:
    """A full collection walks every object the collector tracks: the history must hold none
    (as Change and Order objects, a busy api's history made each full collection 0.1-0.2 s)."""

    def body() -> None:
        feed = _feed()
        feed._append([_change(p, o, f"{p}-{o}", 1, version=2) for o in range(5) for p in (0, 1)])
        for _ in range(3):  # each pass untracks one level of nesting; a held change has one
            gc.collect()
        assert feed._history
        assert not [held for held in feed._history if gc.is_tracked(held)]

    _in_loop(body)


def test_a_replayed_change_is_the_change_that_was_held() -> None:
    def body() -> None:
        feed = _keeping_objects(_feed(), 0)
        sent = _change(1, 4, "o-1", 7, version=3)
        sent.order.price_cents = 1250
        sent.order.status = orders_pb2.ORDER_STATUS_COMPLETED
        feed._append([_change(0, 0, "o-0", 7), sent])
        [replayed] = feed.watch(7, "", {0: 1, 1: 0}).take(10)
        assert replayed is not sent
        assert (replayed.partition, replayed.offset, replayed.order) == (1, 4, sent.order)
        assert replayed.after == sent.after == {0: 1, 1: 5}
        assert replayed.frame() == sent.frame()
        assert replayed.frame_for_one_order() == sent.frame_for_one_order()

    _in_loop(body)


def test_a_replay_of_held_changes_gives_each_watcher_only_what_it_watches() -> None:
    def body() -> None:
        feed = _keeping_objects(_feed(), 2)
        changes = [_change(0, o, f"o{o % 3}", 1 + o % 2, version=1 + o // 3) for o in range(6)]
        feed._append(changes)
        user_1 = feed.watch(1, "", {0: 0, 1: 0})
        assert [type(c) for c in user_1.pending] == [tuple, tuple, Change]  # held until taken
        assert [(c.offset, c.order) for c in user_1.take(10)] == [
            (o, changes[o].order) for o in (0, 2, 4)
        ]
        order_1 = feed.watch(0, "o1", {0: 0, 1: 0})
        assert [(c.offset, c.order.version) for c in order_1.take(10)] == [(1, 1), (4, 2)]
        assert [c.offset for c in feed.watch(0, "", {0: 3, 1: 0}).take(10)] == [3, 4, 5]

    _in_loop(body)


def test_resumed_watchers_share_a_recent_change_and_its_serialized_response() -> None:
    def body() -> None:
        feed = _feed()
        feed.watch(1, "", None)  # a live watcher: the change is serialized as it comes
        change = _change(0, 0, "a", 1)
        feed._append([change])
        frame = change._frame
        assert frame is not None
        first, second = (feed.watch(1, "", {0: 0, 1: 0}).take(1)[0] for _ in range(2))
        assert first is second is change
        assert first.frame() is frame

    _in_loop(body)


def test_forgetting_old_changes_forgets_their_newest_versions_too() -> None:
    def body() -> None:
        feed = _feed(history_size=2)
        changes = [_change(0, o, f"o{o}", 1) for o in range(5)]
        feed._append(changes)  # keeps the last 2
        assert sorted(feed._newest) == ["o3", "o4"]
        assert feed.watch(1, "", {0: 3, 1: 0}).take(5) == changes[3:]  # the same objects
        forgotten = orders_pb2.Order(id="o0", user_id=1, version=1)
        assert not feed.seen_before(forgotten, {0: 5, 1: 0})
        assert feed.seen_before(orders_pb2.Order(id="o4", user_id=1, version=1), {0: 5, 1: 0})

    _in_loop(body)


def test_a_replay_past_the_changes_kept_as_objects_after_forgetting_is_whole() -> None:
    def body() -> None:
        feed = _keeping_objects(_feed(history_size=4), 2)
        changes = [_change(0, o, f"o{o}", 1) for o in range(9)]
        feed._append(changes)  # holds the last 4, the last 2 of them as objects too
        replayed = feed.watch(1, "", {0: 5, 1: 0}).take(10)
        held = range(5, 9)
        assert [(c.offset, c.order) for c in replayed] == [(o, changes[o].order) for o in held]
        assert [c is changes[c.offset] for c in replayed] == [False, False, True, True]
        assert [c.after for c in replayed] == [changes[o].after for o in held]

    _in_loop(body)


def test_a_token_older_than_the_history_is_refused() -> None:
    def body() -> None:
        feed = _feed(history_size=4)
        feed._append([_change(0, o, f"o{o}", 1) for o in range(9)])  # keeps the last 4
        with pytest.raises(ResumeTokenTooOld):
            feed.watch(1, "", {0: 2, 1: 0})
        assert [c.order.id for c in feed.watch(1, "", {0: 5, 1: 0}).pending] == [
            "o5",
            "o6",
            "o7",
            "o8",
        ]

    _in_loop(body)


def test_a_watcher_that_falls_behind_is_ended_not_grown() -> None:
    def body() -> None:
        feed = _feed(max_backlog=3)
        watcher = feed.watch(0, "", None)
        feed._append([_change(0, o, f"o{o}", 1) for o in range(5)])
        assert watcher.ended == "behind"
        assert not watcher.pending

    _in_loop(body)


def test_a_watcher_ended_for_falling_behind_resumes_from_its_token() -> None:
    def body() -> None:
        feed = _feed(max_backlog=3)
        feed._append([_change(0, o, f"o{o}", 1) for o in range(8)])  # 8 held after its token
        resumed = feed.watch(0, "", {0: 0, 1: 0})
        assert resumed.ended is None
        assert [c.order.id for c in resumed.pending] == [f"o{o}" for o in range(8)]
        feed._append([_change(0, 8, "o8", 1)])  # live changes still have their allowance
        assert resumed.ended is None and resumed.pending[-1].order.id == "o8"
        assert len(resumed.take(8)) == 8  # the replay sent: the allowance is spent
        feed._append([_change(0, o, f"o{o}", 1) for o in range(9, 12)])
        assert resumed.ended == "behind"  # 3 more than it had: too far behind again

    _in_loop(body)


def test_closing_the_feed_ends_every_watcher_for_a_reconnect() -> None:
    def body() -> None:
        feed = _feed()
        watchers = [feed.watch(0, "", None), feed.watch(3, "", None), feed.watch(0, "x", None)]
        feed.close()
        assert feed.closed
        assert {w.ended for w in watchers} == {"shutdown"}

    _in_loop(body)


def test_an_initial_state_is_known_as_seen_only_if_its_change_came_before() -> None:
    def body() -> None:
        feed = _feed()
        feed._append([_change(0, 0, "a", 1, version=1), _change(0, 1, "a", 1, version=2)])
        newest = orders_pb2.Order(id="a", user_id=1, version=2)
        assert feed.seen_before(newest, {0: 2})
        assert not feed.seen_before(newest, {0: 1})  # its change is still to come there
        assert not feed.seen_before(orders_pb2.Order(id="a", version=3), {0: 2})
        assert not feed.seen_before(orders_pb2.Order(id="unknown", version=1), {0: 2})

    _in_loop(body)
