"""The outbox relay over a real SQLite file, with a stand-in producer whose deliveries we choose."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException
from sqlalchemy import event, text
from sqlmodel import select

from paysaga.v1 import events_pb2
from services.common.messaging.delivery import Failure
from services.common.messaging.journal import TABLES as JOURNAL_TABLES
from services.common.messaging.outbox import OutboxRecord, OutboxWriter, ParkedRecord
from services.common.messaging.relay import OutboxRelay
from services.common.persistence.db import Database
from services.saga.topics import SAGA_TOPICS

pytestmark = pytest.mark.unit

# As confluent-kafka hands them to delivery callbacks: retriable() and fatal() unset.
RETRIABLE = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "unknown topic")
TOO_LARGE = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "message too large")
UNREACHABLE = KafkaError(KafkaError._MSG_TIMED_OUT, "timed out")
FATAL = KafkaError(KafkaError._FATAL, "idempotent producer fenced")
TOPIC_DENIED = KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "topic authorization failed")


class FakeProducer:
    """Confirms every record on flush, except those whose order id is in `refuse` (with the
    error given there) or in `raise_on_produce` (produce() raises that exception); the first
    `queue_full` produce() calls raise BufferError (librdkafka's local queue is full)."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.refuse: dict[str, KafkaError] = {}
        self.raise_on_produce: dict[str, Exception] = {}
        self.queue_full = 0
        self._pending: list[tuple[str, Any]] = []

    def produce(self, topic: str, key: bytes, value: bytes, headers: Any, on_delivery: Any) -> None:
        order_id = events_pb2.OrderPurchased.FromString(value).order_id
        if self.queue_full > 0:
            self.queue_full -= 1
            raise BufferError("Local: Queue full")
        if order_id in self.raise_on_produce:
            raise self.raise_on_produce[order_id]
        self._pending.append((order_id, on_delivery))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        for order_id, callback in self._pending:
            error = self.refuse.get(order_id)
            if error is None:
                self.sent.append(order_id)
            callback(error, None)
        self._pending = []
        return 0


@pytest.fixture
def db(store_url: str) -> Database:
    database = Database(store_url)
    database.create_tables([OutboxRecord, ParkedRecord, *JOURNAL_TABLES])
    return database


def relay_of(db: Database, producer: FakeProducer, **kwargs: Any) -> OutboxRelay:
    return OutboxRelay(db, lambda: producer, **kwargs)  # type: ignore[arg-type, return-value]


def stage(db: Database, *order_ids: str) -> None:
    with db.write() as session:
        outbox = OutboxWriter(SAGA_TOPICS)
        for order_id in order_ids:
            event = events_pb2.OrderPurchased(order_id=order_id, user_id=1, amount_cents=1)
            outbox.add_event(event, key=1, subject=order_id)
        outbox.write(session)


def remaining(db: Database) -> int:
    with db.read() as session:
        return len(session.exec(select(OutboxRecord)).all())


def parked(db: Database) -> list[ParkedRecord]:
    with db.read() as session:
        return list(session.exec(select(ParkedRecord)).all())


def test_publishes_in_order_and_deletes_what_was_confirmed(db: Database) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer)
    stage(db, "a", "b", "c")
    assert relay.publish_pending() == (3, 0)
    assert producer.sent == ["a", "b", "c"]
    assert relay.publish_pending() == (0, 0)  # nothing is sent twice
    relay.delete_published(now=True)
    assert remaining(db) == 0


def test_rows_staged_after_everything_was_deleted_are_still_published(db: Database) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer)
    stage(db, "a", "b")
    relay.publish_pending()
    relay.delete_published(now=True)
    stage(db, "c")
    relay.publish_pending()
    assert producer.sent == ["a", "b", "c"]


def test_a_refused_record_is_sent_again_and_those_after_it_are_not(db: Database) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer)
    stage(db, "a", "b", "c")
    producer.refuse = {"b": RETRIABLE}
    assert relay.publish_pending() == (2, 1)
    # SQLite deletes published rows about once a second (a is still there), PostgreSQL in the
    # round that published them; b waits either way.
    assert remaining(db) == (2 if db.is_sqlite else 1)
    producer.refuse = {}
    assert relay.publish_pending() == (1, 0)
    assert producer.sent == ["a", "c", "b"]
    relay.delete_published(now=True)
    assert remaining(db) == 0 and parked(db) == []


def test_a_row_failing_for_long_does_not_hold_back_the_rows_after_it(db: Database) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer, batch_size=2)
    stage(db, "stuck", "a", "b", "c", "d")
    producer.refuse = {"stuck": UNREACHABLE}
    for _ in range(4):
        relay.publish_pending()
    assert producer.sent == ["a", "b", "c", "d"]
    assert parked(db) == [] and remaining(db) == 1


def test_a_record_kafka_refuses_for_good_is_parked_and_the_rest_flows(db: Database) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer)
    stage(db, "a", "big", "c")
    producer.refuse = {"big": TOO_LARGE}
    assert relay.publish_pending() == (3, 0)
    stage(db, "d")
    assert relay.publish_pending() == (1, 0)
    assert producer.sent == ["a", "c", "d"]
    [row] = parked(db)
    assert row.topic == "orders" and row.attempts == 1 and "too large" in row.error
    assert events_pb2.OrderPurchased.FromString(row.value or b"").order_id == "big"
    assert relay.parked == 1
    relay.delete_published(now=True)
    assert remaining(db) == 0
    assert "1 outbox record(s) parked" in (relay.problem() or "")


def test_produce_raising_parks_the_row(db: Database) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer)
    stage(db, "a", "bad", "c")
    producer.raise_on_produce = {
        "bad": KafkaException(TOO_LARGE),
    }
    assert relay.publish_pending() == (3, 0)
    assert producer.sent == ["a", "c"]
    assert [p.error for p in parked(db)] == [
        'KafkaError{code=MSG_SIZE_TOO_LARGE,val=10,str="message too large"}'
    ]


def test_a_row_that_keeps_failing_is_parked_after_max_attempts(db: Database) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer, max_attempts=3, stale_after_s=0.0)
    stage(db, "a", "b")
    producer.refuse = {"a": RETRIABLE}
    assert relay.publish_pending() == (1, 1)
    assert relay.publish_pending() == (0, 1)
    assert relay.publish_pending() == (1, 0)  # third failure parks a; b went at once
    assert [p.attempts for p in parked(db)] == [3]
    assert producer.sent == ["b"]


def test_a_young_row_is_not_parked_however_often_it_fails(db: Database) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer, max_attempts=2, stale_after_s=3600)
    stage(db, "a")
    producer.refuse = {"a": RETRIABLE}
    for _ in range(5):
        assert relay.publish_pending() == (0, 1)
    assert parked(db) == []


def test_a_fatal_producer_error_parks_nothing_and_starts_a_new_producer(db: Database) -> None:
    producers = [FakeProducer(), FakeProducer()]
    made = iter(producers)
    relay = OutboxRelay(db, lambda: next(made))  # type: ignore[arg-type, return-value]
    stage(db, "a")
    producers[0].refuse = {"a": FATAL}
    assert relay.publish_pending() == (0, 1)
    assert relay.producer is producers[1] and parked(db) == []
    assert relay.publish_pending() == (1, 0)


def test_an_unreachable_cluster_never_parks_a_row(db: Database) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer, max_attempts=2)
    stage(db, "a")
    producer.refuse = {"a": UNREACHABLE}
    for _ in range(5):
        assert relay.publish_pending() == (0, 1)
    assert parked(db) == [] and remaining(db) == 1
    producer.refuse = {}
    assert relay.publish_pending() == (1, 0)


def test_a_stale_backlog_is_reported(db: Database) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer, stale_after_s=0.0)
    assert relay.problem() is None
    stage(db, "a")
    assert "oldest unpublished outbox record" in (relay.problem() or "")
    relay.publish_pending()
    assert relay.problem() is None


# -- transient refusals: retried by the attempts-and-age rule, never parked at once ----------

DENIALS = [
    KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED, "topic authorization failed"),
    KafkaError(KafkaError.CLUSTER_AUTHORIZATION_FAILED, "cluster authorization failed"),
    KafkaError(KafkaError.SASL_AUTHENTICATION_FAILED, "SASL authentication failed"),
    KafkaError(KafkaError._AUTHENTICATION, "authentication failure"),
]


@pytest.mark.parametrize("denied", DENIALS, ids=lambda e: e.name())
def test_an_authorization_refusal_is_retried_until_the_acl_is_granted(
    db: Database, denied: KafkaError
) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer, max_attempts=2, stale_after_s=3600)
    stage(db, "refund", "b")
    producer.refuse = {"refund": denied}
    for _ in range(4):
        assert relay.publish_pending()[1] == 1  # counted, retried, not parked: the row is young
    assert parked(db) == []
    producer.refuse = {}  # the ACL is granted
    assert relay.publish_pending() == (1, 0)
    assert producer.sent == ["b", "refund"] and parked(db) == []


def test_an_authorization_refusal_that_lasts_is_parked_by_the_retriable_rule(
    db: Database,
) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer, max_attempts=3, stale_after_s=0.0)
    stage(db, "a")
    producer.refuse = {"a": TOPIC_DENIED}
    assert relay.publish_pending() == (0, 1)
    assert relay.publish_pending() == (0, 1)  # not at its first failure
    assert relay.publish_pending() == (1, 0)
    [row] = parked(db)
    assert row.attempts == 3
    assert "TOPIC_AUTHORIZATION_FAILED" in row.error and "WRITE permission" in row.error


@pytest.mark.parametrize(
    "exc",
    [
        KafkaException(TOPIC_DENIED),
        KafkaException(KafkaError(KafkaError._UNKNOWN_TOPIC, "unknown topic")),
        RuntimeError("librdkafka said something new"),
    ],
    ids=["denied", "unknown-topic", "unexpected"],
)
def test_produce_raising_what_may_pass_is_retried_not_parked(db: Database, exc: Exception) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer, max_attempts=2, stale_after_s=3600)
    stage(db, "a", "b")
    producer.raise_on_produce = {"a": exc}
    assert relay.publish_pending() == (1, 1)
    assert relay.publish_pending() == (0, 1)
    assert parked(db) == []
    producer.raise_on_produce = {}
    assert relay.publish_pending() == (1, 0)
    assert producer.sent == ["b", "a"]


@pytest.mark.parametrize(
    "exc",
    [ValueError("headers must be a list of tuples"), TypeError("value must be bytes")],
    ids=["ValueError", "TypeError"],
)
def test_produce_raising_for_a_record_it_cannot_send_parks_it_at_once(
    db: Database, exc: Exception
) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer, max_attempts=5, stale_after_s=3600)
    stage(db, "bad", "b")
    producer.raise_on_produce = {"bad": exc}
    assert relay.publish_pending() == (2, 0)
    [row] = parked(db)
    assert row.error == f"{type(exc).__name__}: {exc}" and row.attempts == 1
    assert producer.sent == ["b"]


def test_a_full_local_queue_waits_and_sends_the_row_once(db: Database) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer, max_attempts=1, stale_after_s=0.0)
    stage(db, "a", "b")
    producer.queue_full = 3
    assert relay.publish_pending() == (2, 0)
    assert producer.sent == ["a", "b"] and parked(db) == []


def test_a_full_local_queue_never_counts_towards_parking() -> None:
    failure = Failure.of_exception(BufferError("Local: Queue full"))
    assert (failure.permanent, failure.counts) == (False, False)


def test_a_park_whose_commit_fails_is_not_counted_and_the_next_round_parks_it(
    db: Database,
) -> None:
    producer = FakeProducer()
    relay = relay_of(db, producer)
    stage(db, "big")
    producer.refuse = {"big": TOO_LARGE}

    def refuse(_connection: object) -> None:
        raise RuntimeError("the commit failed")

    engines = {id(e): e for e in (db._writer, db._relaxed_writer)}.values()  # PostgreSQL: two
    for engine in engines:
        event.listen(engine, "commit", refuse)
    try:
        with pytest.raises(RuntimeError, match="the commit failed"):
            relay.publish_pending()
    finally:
        for engine in engines:
            event.remove(engine, "commit", refuse)
    assert relay.parked == 0 and parked(db) == [] and remaining(db) == 1
    relay.claims.reset()  # what the relay does after an error (_lose_track)
    if not db.is_sqlite:  # the claim committed on its own: the row is leased until it ends
        assert relay.publish_pending() == (0, 0)
        with db.write_core() as transaction:  # the lease ends
            transaction.execute(text("UPDATE outbox SET claimed_until = now() - interval '1 s'"))
    relay.publish_pending()
    assert relay.parked == 1 and [row.topic for row in parked(db)] == ["orders"]
