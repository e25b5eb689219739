"""The relay's running loop on each database: rounds that overlap, a commit that wakes it while a
round waits for its acknowledgements, failures while rounds are in flight, and stopping.

The producer here holds every record until the test lets the broker answer, so a test can
see what the relay does while acknowledgements are outstanding.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from confluent_kafka import KafkaError
from sqlmodel import select

from paysaga.v1 import events_pb2
from services.common.messaging.journal import TABLES as JOURNAL_TABLES
from services.common.messaging.outbox import ClaimedRow, OutboxRecord, OutboxWriter, ParkedRecord
from services.common.messaging.relay import OutboxRelay
from services.common.persistence.db import Database
from services.saga.topics import SAGA_TOPICS

pytestmark = pytest.mark.unit

UNREACHABLE = KafkaError(KafkaError._MSG_TIMED_OUT, "timed out")


class HeldProducer:
    """Keeps every produced record until `answer()`; then confirms it, or refuses it with the
    error in `refuse` (by order id). Thread-safe like librdkafka's: produce on one thread,
    flush on another."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.produced: list[str] = []
        self.refuse: dict[str, KafkaError] = {}
        self._held: list[tuple[str, Any]] = []
        self._answerable: list[tuple[str, Any]] = []
        self._lock = threading.Condition()

    def produce(self, topic: str, key: bytes, value: bytes, headers: Any, on_delivery: Any) -> None:
        order_id = events_pb2.OrderPurchased.FromString(value).order_id
        with self._lock:
            self.produced.append(order_id)
            self._held.append((order_id, on_delivery))

    def answer(self) -> None:
        """The broker answers for everything produced so far."""
        with self._lock:
            self._answerable += self._held
            self._held = []
            self._lock.notify_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self._held) + len(self._answerable)

    def poll(self, timeout: float) -> int:
        return self._serve(timeout)

    def flush(self, timeout: float) -> int:
        self._serve(timeout)
        return len(self)

    def _serve(self, timeout: float) -> int:
        with self._lock:
            if not self._answerable:
                self._lock.wait(timeout)
            ready, self._answerable = self._answerable, []
        for order_id, callback in ready:
            error = self.refuse.get(order_id)
            if error is None:
                self.sent.append(order_id)
            callback(error, None)
        return len(ready)


@pytest.fixture
def db(store_url: str) -> Database:
    database = Database(store_url)
    database.create_tables([OutboxRecord, ParkedRecord, *JOURNAL_TABLES])
    return database


@pytest.fixture
def producer() -> HeldProducer:
    return HeldProducer()


@pytest.fixture
def running(db: Database, producer: HeldProducer) -> Iterator[OutboxRelay]:
    relay = OutboxRelay(db, lambda: producer, idle_poll_s=0.2)  # type: ignore[arg-type, return-value]
    relay.start()
    yield relay
    producer.answer()
    relay.stop(timeout_s=5)


@contextmanager
def started(relay: OutboxRelay, producer: HeldProducer) -> Iterator[OutboxRelay]:
    """Runs `relay` for the block; then the broker answers everything and it stops."""
    relay.start()
    try:
        yield relay
    finally:
        producer.answer()
        relay.stop(timeout_s=5)
        producer.answer()


def stage(db: Database, *order_ids: str, user_id: int = 1) -> None:
    with db.write() as session:
        outbox = OutboxWriter(SAGA_TOPICS)
        for order_id in order_ids:
            event = events_pb2.OrderPurchased(order_id=order_id, user_id=user_id, amount_cents=1)
            outbox.add_event(event, key=user_id, subject=order_id)
        outbox.write(session)


def stage_and_hand_over(db: Database, producer: HeldProducer, *order_ids: str) -> None:
    """Stage `order_ids` and wait until the relay has handed exactly them to the producer,
    after what it had handed over before (their answers are still held)."""
    before = list(producer.produced)
    stage(db, *order_ids)
    eventually(lambda: producer.produced == before + list(order_ids))


def remaining(db: Database) -> int:
    with db.read() as session:
        return len(session.exec(select(OutboxRecord)).all())


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the relay did not get there in time"
        time.sleep(0.01)


def test_a_commit_during_a_round_is_produced_before_that_round_is_acknowledged(
    db: Database, producer: HeldProducer, running: OutboxRelay
) -> None:
    stage_and_hand_over(db, producer, "a")
    stage(db, "b")  # a is still waiting for its acknowledgement
    eventually(lambda: producer.produced == ["a", "b"])
    assert producer.sent == []
    producer.answer()
    eventually(lambda: producer.sent == ["a", "b"])
    running.delete_published(now=True)
    eventually(lambda: remaining(db) == 0)


def test_no_more_rounds_than_allowed_are_in_flight_and_the_rest_follow_in_order(
    db: Database, producer: HeldProducer, running: OutboxRelay
) -> None:
    stage_and_hand_over(db, producer, "a")
    stage_and_hand_over(db, producer, "b")
    stage(db, "c", "d")  # two rounds in flight already: these wait
    time.sleep(0.3)
    assert producer.produced == ["a", "b"]
    producer.answer()
    eventually(lambda: producer.produced == ["a", "b", "c", "d"])
    producer.answer()
    eventually(lambda: producer.sent == ["a", "b", "c", "d"])


def test_a_failure_while_another_round_is_in_flight_retries_the_row_and_loses_nothing(
    db: Database, producer: HeldProducer, running: OutboxRelay
) -> None:
    producer.refuse = {"a": UNREACHABLE}
    stage_and_hand_over(db, producer, "a")
    stage_and_hand_over(db, producer, "b")
    producer.answer()  # a is refused, b confirmed
    eventually(lambda: producer.sent == ["b"])
    producer.refuse = {}
    eventually(lambda: producer.produced.count("a") == 2)  # sent again, after a backoff
    producer.answer()
    eventually(lambda: producer.sent == ["b", "a"])
    assert producer.produced.count("b") == 1  # nothing confirmed is sent twice
    running.delete_published(now=True)
    eventually(lambda: remaining(db) == 0)
    with db.read() as session:
        assert session.exec(select(ParkedRecord)).all() == []


def test_stopping_waits_for_the_rounds_in_flight_and_publishes_what_is_pending(
    db: Database, producer: HeldProducer
) -> None:
    relay = OutboxRelay(db, lambda: producer, idle_poll_s=0.2)  # type: ignore[arg-type, return-value]
    relay.start()
    stage_and_hand_over(db, producer, "a")
    stage_and_hand_over(db, producer, "b")
    stage(db, "c")  # waits: two rounds are in flight
    stopped = threading.Thread(target=relay.stop, kwargs={"timeout_s": 5})
    stopped.start()
    while stopped.is_alive():
        producer.answer()
        stopped.join(0.05)
    assert producer.sent == ["a", "b", "c"]
    assert remaining(db) == 0 and not relay.is_alive()


def test_a_round_answered_quickly_is_not_overlapped_and_the_rows_go_together_after_it(
    db: Database, producer: HeldProducer
) -> None:
    # Where the broker answers within overlap_after_s, rows committed during a round wait
    # for it and go in one round (one produce request) instead of a round each.
    relay = OutboxRelay(db, lambda: producer, idle_poll_s=0.2, overlap_after_s=3600)  # type: ignore[arg-type, return-value]
    with started(relay, producer):
        stage_and_hand_over(db, producer, "a")
        stage(db, "b")
        stage(db, "c")
        time.sleep(0.3)
        assert producer.produced == ["a"]
        producer.answer()
        eventually(lambda: producer.produced == ["a", "b", "c"])
    assert producer.sent == ["a", "b", "c"]


def test_a_round_answered_is_settled_without_a_claim_that_would_find_nothing(
    db: Database, producer: HeldProducer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The relay claims at start, after each commit and on its idle poll; an answer only
    # settles its round (a claim then would find nothing: the commits wake it themselves).
    relay = OutboxRelay(db, lambda: producer, idle_poll_s=60)  # type: ignore[arg-type, return-value]
    claimed: list[int] = []
    claim = relay.claims.claim

    def counted(limit: int) -> list[ClaimedRow]:
        rows = claim(limit)
        claimed.append(len(rows))
        return rows

    monkeypatch.setattr(relay.claims, "claim", counted)
    with started(relay, producer):
        eventually(lambda: claimed == [0])
        stage_and_hand_over(db, producer, "a")
        producer.answer()
        eventually(lambda: producer.sent == ["a"])
        time.sleep(0.3)
        assert claimed == [0, 1]
        stage_and_hand_over(db, producer, "b")
        assert claimed == [0, 1, 1]
    assert producer.sent == ["a", "b"]


def test_a_round_after_an_answered_one_waits_out_the_interval(
    db: Database, producer: HeldProducer
) -> None:
    relay = OutboxRelay(db, lambda: producer, idle_poll_s=60, round_interval_s=1.0)  # type: ignore[arg-type, return-value]
    with started(relay, producer):
        stage_and_hand_over(db, producer, "a")  # the first round: at once
        producer.answer()
        eventually(lambda: producer.sent == ["a"])
        stage(db, "b")
        stage(db, "c")
        time.sleep(0.1)
        assert producer.produced == ["a"], "within the interval of a's round: b and c wait"
        eventually(lambda: producer.produced == ["a", "b", "c"])
        producer.answer()
        eventually(lambda: producer.sent == ["a", "b", "c"])
        time.sleep(1.1)  # a quiet spell longer than the interval
        stage(db, "d")
        eventually(lambda: producer.produced[-1:] == ["d"], timeout_s=0.8)  # at once
