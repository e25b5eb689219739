"""A failing handler is tried again in place, with growing waits, before its record is
dead-lettered; a rejected or undecodable event is not; all of it bounded per batch.

The hop of test_consumer_narrowing (its stand-in handler `Ledger` over a real database of
each kind); the waits are recorded instead of slept.
"""

from __future__ import annotations

import pytest

from services.common.messaging import retries
from services.common.messaging.cloudevents import InvalidEvent
from services.common.messaging.retries import RetryBudget, RetryPolicy
from tests.unit.common.messaging.test_consumer_narrowing import (  # noqa: F401 (the fixture)
    Hop,
    Ledger,
    applied,
    dead_letters,
    deadlock,
    hop,
    order_record,
)

pytestmark = pytest.mark.unit


class FakeTime:
    """A clock that moves only when someone sleeps; the sleeps it saw."""

    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def with_policy(
    hop: Hop,  # noqa: F811 (the fixture's name)
    monkeypatch: pytest.MonkeyPatch,
    policy: RetryPolicy,
) -> FakeTime:
    """Make the hop retry as `policy` says, on a fake clock."""
    fake = FakeTime()
    hop.consumer.applier.retry = policy

    def budget(self: RetryPolicy) -> RetryBudget:
        return RetryBudget(self, clock=lambda: fake.now, sleep=fake.sleep)

    monkeypatch.setattr(retries.RetryPolicy, "budget", budget)
    return fake


def counting(failures: list[Exception]) -> list[int]:
    """Make order-0's handler raise `failures`, one per try; the tries it saw (one each)."""
    tries: list[int] = []

    class Counted(list[Exception]):
        def pop(self, index: int = -1) -> Exception:  # type: ignore[override]
            tries.append(1)
            return super().pop(index)

    Ledger.failures = {"order-0": Counted(failures)}
    return tries


def test_a_failing_handler_is_retried_with_growing_jittered_waits_then_dead_lettered(
    hop: Hop,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = with_policy(hop, monkeypatch, RetryPolicy(retries=3, backoff_s=0.1))
    tries = counting([RuntimeError("ledger down") for _ in range(10)])

    hop.consumer.process_batch([order_record(0, 0, "order-0"), order_record(0, 1, "order-1")])  # type: ignore[list-item]

    # Tried in the batch, then alone 1 + 3 times; the waits double, each half at random.
    assert len(tries) == 1 + 1 + 3
    assert len(fake.slept) == 3
    for wait, full in zip(fake.slept, (0.1, 0.2, 0.4), strict=True):
        assert full / 2 <= wait <= full
    [(_, headers)] = dead_letters(hop.db)
    assert dict(headers)["dlt_reason"] == b"RuntimeError: ledger down"
    assert applied(hop.db) == ["order-1"]
    assert hop.kafka.stored == [[("orders", 0, 2)]]


def test_a_handler_that_recovers_while_retried_is_applied(
    hop: Hop,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = with_policy(hop, monkeypatch, RetryPolicy(retries=3, backoff_s=0.1))
    counting([RuntimeError("ledger down"), RuntimeError("ledger down")])
    hop.consumer.process_batch([order_record(0, 0, "order-0")])  # type: ignore[list-item]
    assert applied(hop.db) == ["order-0"]
    assert dead_letters(hop.db) == []
    assert len(fake.slept) == 2


@pytest.mark.parametrize("poison", ["rejected", "undecodable"])
def test_a_rejected_or_undecodable_event_is_dead_lettered_without_retries(
    hop: Hop,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
    poison: str,
) -> None:
    fake = with_policy(hop, monkeypatch, RetryPolicy(retries=3, backoff_s=0.1))
    tries = counting([InvalidEvent("amount is not positive")])
    record = order_record(0, 0, "order-0")
    if poison == "undecodable":
        record._value = b"\xff\x00 not a protobuf"
    hop.consumer.process_batch([record])  # type: ignore[list-item]
    assert len(dead_letters(hop.db)) == 1
    assert fake.slept == []
    assert len(tries) == (1 if poison == "rejected" else 0)


def test_the_batch_retry_time_is_bounded(
    hop: Hop,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Many failing records in one batch: once the batch's time is spent, the rest are
    dead-lettered at their first failure."""
    fake = with_policy(hop, monkeypatch, RetryPolicy(retries=3, backoff_s=1.0, max_total_s=2.5))
    Ledger.failures = {f"order-{i}": [RuntimeError("down") for _ in range(10)] for i in range(4)}
    records = [order_record(0, i, f"order-{i}") for i in range(4)]
    hop.consumer.process_batch(records)  # type: ignore[list-item]
    assert len(dead_letters(hop.db)) == 4
    assert sum(fake.slept) <= 2.5
    assert hop.kafka.stored == [[("orders", 0, 4)]]


def test_a_transient_database_error_is_retried_with_waits_and_never_dead_lettered(
    hop: Hop,  # noqa: F811 (the fixture)
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake = with_policy(hop, monkeypatch, RetryPolicy(retries=2, backoff_s=0.1))
    Ledger.failures = {"order-0": [deadlock() for _ in range(10)]}
    records = [order_record(0, 0, "order-0"), order_record(0, 1, "order-1")]
    assert not hop.consumer.process_or_rewind(records)  # type: ignore[arg-type]
    assert len(fake.slept) == 2
    assert (dead_letters(hop.db), applied(hop.db), hop.kafka.stored) == ([], [], [])
    assert hop.kafka.seeks == [("orders", 0, 0)]


def test_waits_double_with_jitter_and_stop_at_the_count_or_the_time() -> None:
    fake = FakeTime()
    budget = RetryBudget(
        RetryPolicy(retries=4, backoff_s=1.0, max_total_s=5.0),
        clock=lambda: fake.now,
        sleep=fake.sleep,
    )
    waits = []
    for retry in range(1, 6):
        wait = budget.wait_before(retry)
        if wait is None:
            break
        waits.append(wait)
        budget.pause(wait)
    # 0.5-1, 1-2, 2-4 fit in 5 s at most 7 s; whatever is left is the last wait, then none.
    assert 0.5 <= waits[0] <= 1.0 and 1.0 <= waits[1] <= 2.0
    assert sum(fake.slept) <= 5.0
    assert budget.wait_before(len(waits) + 1) is None
    assert RetryBudget(RetryPolicy(retries=0)).wait_before(1) is None
