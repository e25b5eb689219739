"""The deadline gate: a due order is failed only by a replica that holds the partition its
outcome arrives on and has applied it up to the high watermark read at that moment.

The consumer here is the real EventConsumer, hop and database; its Kafka client is a
stand-in whose poll never comes back empty (steady traffic), which a gate set by "the
first empty poll" never opens for. The integration tests run the same against a broker.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from google.protobuf.message import Message
from sqlmodel import Session, select

from paysaga.v1 import events_pb2
from services.common.messaging import consumer as consumer_module
from services.common.messaging.catchup import CaughtUpPartitions
from services.common.messaging.cloudevents import EventMeta
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import TABLES as JOURNAL_TABLES
from services.common.messaging.kafka import PARTITIONER, partition_for_key, producer_config
from services.common.messaging.outbox import OutboxRecord, OutboxWriter
from services.common.persistence.db import Database
from services.common.timeutil import utcnow
from services.order.deadlines import SagaDeadlines, due_orders, expire_due, outcome_partition
from services.order.domain import Status
from services.order.models import Order, SagaDeadline
from services.saga.topics import SAGA_TOPICS, TRANSACTIONS
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

PARTITIONS = 2


def users_on(partition: int, count: int, start: int = 1) -> list[int]:
    """`count` user ids whose outcomes arrive on `partition` (of PARTITIONS)."""
    found: list[int] = []
    user = start
    while len(found) < count:
        if outcome_partition(user, PARTITIONS) == partition:
            found.append(user)
        user += 1
    return found


@pytest.fixture
def db(store_url: str) -> Iterator[Database]:
    database = Database(store_url)
    database.create_tables([Order, SagaDeadline, OutboxRecord, ProcessedEvent, *JOURNAL_TABLES])
    yield database
    database.dispose()


def add_order(db: Database, user_id: int, due_at: datetime) -> str:
    """A CREATED order of `user_id` with its saga deadline at `due_at`."""
    order_id = str(uuid.uuid4())
    with db.write() as session:
        session.add(
            Order(id=order_id, user_id=user_id, product_id=1, price_cents=5000, status="CREATED")
        )
        session.add(SagaDeadline(order_id=order_id, due_at=due_at))
    return order_id


def status(db: Database, order_id: str) -> str:
    with db.read() as session:
        order = session.get(Order, order_id)
        assert order is not None
        return order.status


def test_the_outcome_partition_is_where_the_outbox_key_sends_it() -> None:
    """The outbox keys an order's events by its user; the gate maps users the same way."""
    outbox = OutboxWriter(SAGA_TOPICS)
    for user_id in range(1, 50):
        outbox.add_event(events_pb2.TransactionRecorded(order_id="o"), key=user_id, subject="o")
    for user_id, row in zip(range(1, 50), outbox.rows, strict=True):
        key = row["key"]
        assert partition_for_key(key, 6) == outcome_partition(user_id, 6)


def test_no_override_changes_how_producers_partition(monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate computes the outcome's partition the producers' way: it stays pinned."""
    monkeypatch.setenv("KAFKA_CONFIG_PARTITIONER", "murmur2_random")
    assert producer_config("127.0.0.1:9092", "relay")["partitioner"] == PARTITIONER


def test_a_replica_fails_only_due_orders_on_its_caught_up_partitions(db: Database) -> None:
    past = utcnow() - timedelta(seconds=5)
    mine = [add_order(db, u, past) for u in users_on(0, 3)]
    theirs = [add_order(db, u, past) for u in users_on(1, 3)]
    state = CaughtUpPartitions(TRANSACTIONS.name, PARTITIONS, frozenset({0}), utcnow())
    deadlines = SagaDeadlines(db, deadline_s=60, caught_up=lambda _topic: state)
    assert deadlines() == 3
    assert [status(db, o) for o in mine] == ["FAILED"] * 3
    assert [status(db, o) for o in theirs] == ["CREATED"] * 3


def test_nothing_is_failed_while_the_consumer_cannot_tell(db: Database) -> None:
    order = add_order(db, 1, utcnow() - timedelta(seconds=5))
    assert SagaDeadlines(db, deadline_s=60, caught_up=lambda _topic: None)() == 0
    assert SagaDeadlines(db, deadline_s=60)() == 0  # no consumer handed in yet
    nothing = CaughtUpPartitions(TRANSACTIONS.name, PARTITIONS, frozenset(), utcnow())
    assert SagaDeadlines(db, deadline_s=60, caught_up=lambda _topic: nothing)() == 0
    assert status(db, order) == "CREATED"


def test_a_deadline_that_passed_after_the_watermarks_were_read_waits(db: Database) -> None:
    """An outcome produced after the watermarks were read, but before the deadline, is
    not known to be applied: that order waits for the next round."""
    [user] = users_on(0, 1)
    as_of = utcnow() - timedelta(seconds=2)
    before = add_order(db, user, as_of - timedelta(seconds=1))
    after = add_order(db, user, as_of + timedelta(seconds=1))
    state = CaughtUpPartitions(TRANSACTIONS.name, PARTITIONS, frozenset({0}), as_of)
    SagaDeadlines(db, deadline_s=60, caught_up=lambda _topic: state)()
    assert (status(db, before), status(db, after)) == ("FAILED", "CREATED")


def test_due_orders_of_other_partitions_do_not_hide_this_replicas_own(db: Database) -> None:
    """Pages of due orders it does not cover are skipped, not taken for the whole batch."""
    early = utcnow() - timedelta(minutes=5)
    for i, user in enumerate(users_on(1, 12)):
        add_order(db, user, early + timedelta(seconds=i))
    [user] = users_on(0, 1)
    mine = add_order(db, user, utcnow() - timedelta(seconds=1))

    def covers(user_id: int) -> bool:
        return outcome_partition(user_id, PARTITIONS) == 0

    with db.read() as session:
        assert due_orders(session, due_by=utcnow(), covers=covers, limit=5) == [mine]
    assert expire_due(db, deadline_s=60, covers=covers, batch_size=5) == 1
    assert status(db, mine) == "FAILED"


# --- the gate against a consumer under steady traffic ------------------------------------


class SteadyTraffic:
    """A Kafka client stand-in for one partition of `transactions` whose poll always has a
    record: `backlog` records wait at the start, more arrive at half the rate the consumer
    applies them while it lags, and once it has caught up the next record arrives just as
    it polls. A gate set by the first empty poll never opens here."""

    def __init__(self, backlog: int) -> None:
        self.end = backlog  # the high watermark
        self.next_offset = 0
        self.takes = 0
        self.on_assign: Any = None

    def subscribe(self, _topics: list[str], **callbacks: Any) -> None:
        self.on_assign = callbacks["on_assign"]

    def poll(self, _timeout: float) -> FakeRecord | None:
        if self.on_assign is not None:
            self.on_assign(self, [TopicPartition(TRANSACTIONS.name, 0)])
            self.on_assign = None
        self.takes += 1
        if self.next_offset >= self.end or self.takes % 2 == 0:
            self.end += 1  # a record arrives (the poll waits for it when none is left)
        record = self._record(self.next_offset)
        self.next_offset += 1
        return record

    def consume(self, *_: Any) -> list[FakeRecord]:
        return []

    def high_watermarks(self, topic: str) -> dict[int, int]:
        assert topic == TRANSACTIONS.name
        return {0: self.end, 1: 0}

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 0) for tp in partitions]

    def store_offsets(self, offsets: Any) -> None:
        pass

    def close(self) -> None:
        pass

    @staticmethod
    def _record(offset: int) -> FakeRecord:
        meta = EventMeta.new(
            ce_type=TRANSACTIONS.ce_type, source=TRANSACTIONS.source, subject=f"other-{offset}"
        )
        event = events_pb2.TransactionRecorded(order_id=f"other-{offset}", user_id=1)
        return FakeRecord(TRANSACTIONS.name, 0, offset, event.SerializeToString(), meta.headers())


class SlowHandler:
    """Applies nothing, slowly: the consumer lags while a backlog waits."""

    def __init__(self, _session: Session, _outbox: OutboxWriter, _events: Sequence[Message]):
        time.sleep(0.005)

    def apply(self, event: Message, meta: EventMeta) -> None:
        pass

    def write(self) -> None:
        pass


def test_under_steady_traffic_the_sweep_waits_while_lagging_then_runs(db: Database) -> None:
    [user] = users_on(0, 1)
    order = add_order(db, user, utcnow() - timedelta(seconds=1))
    client = SteadyTraffic(backlog=100)
    consumer = EventConsumer(
        db,
        client,  # type: ignore[arg-type]
        {TRANSACTIONS.name: SlowHandler},  # type: ignore[dict-item]
        topics=SAGA_TOPICS,
        high_watermarks=client.high_watermarks,
    )
    deadlines = SagaDeadlines(db, deadline_s=60)
    deadlines.watch(consumer)
    consumer.start()
    try:
        while consumer.applied < 3:  # it holds the partition and is working the backlog
            time.sleep(0.005)
        lagging = consumer.caught_up_partitions(TRANSACTIONS.name)
        assert lagging is not None and lagging.partitions == frozenset()
        assert lagging.partition_count == PARTITIONS
        assert deadlines() == 0 and status(db, order) == "CREATED"
        give_up = time.monotonic() + 30
        while deadlines() == 0:
            assert time.monotonic() < give_up, "the sweep never ran under steady traffic"
            time.sleep(0.05)
        assert status(db, order) == "FAILED"
        assert client.next_offset > 100  # it caught up with the backlog, traffic went on
    finally:
        consumer.stop()
    with db.read() as session:
        assert session.exec(select(Order.status)).all() == [Status.FAILED.value]


def test_watermarks_unreadable_for_long_are_said_at_warning_once(
    db: Database, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Until the high watermarks are read, no deadline is swept here: an operator is told."""
    client = SteadyTraffic(backlog=0)
    reachable = False

    def high_watermarks(topic: str) -> dict[int, int]:
        if not reachable:
            raise RuntimeError("no broker answers")
        return client.high_watermarks(topic)

    consumer = EventConsumer(
        db,
        client,  # type: ignore[arg-type]
        {TRANSACTIONS.name: SlowHandler},  # type: ignore[dict-item]
        topics=SAGA_TOPICS,
        high_watermarks=high_watermarks,
    )
    consumer.start()
    try:
        with caplog.at_level("INFO", logger=consumer_module.__name__):
            assert consumer.caught_up_partitions(TRANSACTIONS.name) is None
            assert not [r for r in caplog.records if r.levelname == "WARNING"]
            monkeypatch.setattr(consumer_module, "WATERMARKS_WARN_AFTER_S", 0.0)
            for _ in range(3):
                assert consumer.caught_up_partitions(TRANSACTIONS.name) is None
            reachable = True
            assert consumer.caught_up_partitions(TRANSACTIONS.name) is not None
    finally:
        consumer.stop()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 2, warnings
    assert "fails no saga deadline" in warnings[0]
    assert "read again" in warnings[1]
