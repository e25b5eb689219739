"""The live flow's window: counts per lane and outcome over the last minute, summed on the
server whatever the rate (services.console.flow), and the hub's counting of order changes."""

from __future__ import annotations

import time

from paysaga.v1 import orders_pb2
from services.cli.client import Client
from services.cli.targets import Targets
from services.console.flow import FlowWindow, TopicSample, reason_kind
from services.console.hub import Hub

T0 = 1_800_000_000.0


def lane(summary: dict, lane_id: str) -> dict:
    return next(found for found in summary["lanes"] if found["id"] == lane_id)


def test_counts_per_outcome_and_reason_over_the_window() -> None:
    flow = FlowWindow()
    for i in range(200):
        flow.order_created(T0 + i / 200)
    for i in range(150):
        flow.order_completed(T0 + 0.5 + i / 200)
    for i in range(50):
        flow.order_failed(f"o{i}", f"insufficient balance: {i}.00 < 1000.00", T0 + 0.9)
    flow.order_failed("x", "no such product: 99", T0 + 1.0)
    summary = flow.summary(T0 + 2)
    assert summary["outcomes"]["created"] == 200
    assert summary["outcomes"]["completed"] == 150
    assert summary["outcomes"]["failed"] == 51
    assert summary["reasons"] == [
        {"reason": "insufficient balance", "count": 50},
        {"reason": "no such product", "count": 1},
    ]
    assert summary["recent_failures"][0]["order_id"] == "x", "newest first"
    assert lane(summary, "order-created")["count"] == 200
    assert lane(summary, "order-ended")["count"] == 201
    assert len(lane(summary, "order-created")["series"]) == 60


def test_what_is_older_than_a_minute_is_forgotten() -> None:
    flow = FlowWindow()
    flow.order_created(T0)
    flow.order_failed("o1", "declined: x", T0)
    flow.order_created(T0 + 30)
    summary = flow.summary(T0 + 61)
    assert summary["outcomes"]["created"] == 1
    assert summary["outcomes"]["failed"] == 0
    assert summary["reasons"] == [] and summary["recent_failures"] == []


def test_topic_lanes_count_records_in_and_consumed_from_offsets() -> None:
    flow = FlowWindow()
    flow.topics_seen({"orders": TopicSample(end=100, committed=90)}, {}, T0)
    flow.topics_seen({"orders": TopicSample(end=400, committed=380)}, {"orders": 2}, T0 + 2)
    flow.topics_seen({"orders": TopicSample(end=700, committed=690)}, {"orders": 2}, T0 + 4)
    orders = lane(flow.summary(T0 + 4), "orders")
    assert orders["count"] == 600 and orders["consumed"] == 600
    assert orders["waiting"] == 10
    assert orders["rate"] == 150.0
    assert orders["series"][-2:] == [300, 300] and len(orders["series"]) == 30
    assert orders["dead_letters"] == 2
    assert lane(flow.summary(T0 + 4), "payments")["known"] is False


def test_reasons_without_amounts_count_together_and_are_bounded() -> None:
    assert reason_kind("insufficient balance: 50.00 < 1000.00") == "insufficient balance"
    flow = FlowWindow()
    for i in range(40):
        flow.order_failed(str(i), f"reason {i}: detail", T0)
    reasons = {r["reason"]: r["count"] for r in flow.summary(T0)["reasons"]}
    assert len(reasons) == 13 and reasons["other reasons"] == 28


def test_a_summary_at_200_orders_a_second_stays_small_and_quick() -> None:
    hub = Hub(Client(Targets(order=["127.0.0.1:1"], payment=["127.0.0.1:2"]), 1.0))
    created = [
        orders_pb2.Order(id=f"o{i}", status=orders_pb2.ORDER_STATUS_CREATED) for i in range(12_000)
    ]
    started = time.perf_counter()
    for i, order in enumerate(created):  # a minute at 200/s: created, then completed
        hub.order_changed(order, T0 + i / 200)
        ended = orders_pb2.Order(id=order.id, status=orders_pb2.ORDER_STATUS_COMPLETED)
        hub.order_changed(ended, T0 + i / 200 + 0.05)
    counting = time.perf_counter() - started
    started = time.perf_counter()
    summary = hub.flow_summary(T0 + 60)
    summing = time.perf_counter() - started
    assert summary["outcomes"]["created"] + summary["outcomes"]["completed"] >= 23_000
    assert counting < 2.0, f"counting 24,000 changes took {counting:.2f}s"
    assert summing < 0.05, f"one summary took {summing * 1000:.1f}ms"


def test_a_later_change_of_an_ended_order_is_not_a_second_ending() -> None:
    hub = Hub(Client(Targets(order=["127.0.0.1:1"], payment=["127.0.0.1:2"]), 1.0))
    failed = orders_pb2.Order(id="o1", status=orders_pb2.ORDER_STATUS_FAILED, failure_reason="x")
    hub.order_changed(failed, T0)
    hub.order_changed(orders_pb2.Order(id="o1", status=3, version=3), T0 + 1)  # a refund note
    assert hub.flow_summary(T0 + 2)["outcomes"]["failed"] == 1
    seq, changed = hub.changes_since(0)
    assert seq == 2 and [o.version for o in changed] == [3], "the last change of each order"
