"""The deadline gate against the real broker: Order replicas (consumer of `transactions`,
FinishOrders, saga deadlines sweeping all along) on one SQLite order database.

A replica sweeps only the partitions it holds and has applied up to the high watermark
read at that moment, asked afresh each round. So an outcome waiting in Kafka wins over
the deadline when another replica holds it unread, and during and after a broker outage
in the middle of a rebalance. A gate latched by a first empty poll (or local to the
replica) fails those orders.

A replica is "frozen" by holding its consumer thread before its next poll: its client's
own threads keep it in the group, holding its partitions, as a replica stuck in a long
pause would.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer

from paysaga.v1 import events_pb2, payments_pb2
from services.common.messaging.cloudevents import EventMeta
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.kafka import (
    HighWatermarks,
    consumer_config,
    producer_config,
)
from services.common.persistence.db import Database
from services.common.persistence.migrate import migrate
from services.common.timeutil import utcnow
from services.common.worker import PeriodicWorker
from services.order.__main__ import MIGRATIONS
from services.order.deadlines import SagaDeadlines, outcome_partition
from services.order.handlers import FinishOrders
from services.order.models import Order, SagaDeadline
from services.saga.topics import SAGA_TOPICS, TRANSACTIONS
from tests.support import pin_groups_to_end, wait_for

pytestmark = pytest.mark.integration

PRICE = 5000


class HeldClient:
    """A real consumer client whose next poll can be held (the replica is frozen)."""

    def __init__(self, client: Consumer) -> None:
        self._client = client
        self.running = threading.Event()
        self.running.set()
        self.parked = threading.Event()

    def poll(self, timeout: float) -> Any:
        if not self.running.is_set():
            self.parked.set()
            self.running.wait()
            self.parked.clear()
        return self._client.poll(timeout)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


@dataclass
class Replica:
    """One Order replica's consumer and deadline worker; `failed` counts what it expired."""

    name: str
    client: HeldClient
    consumer: EventConsumer
    sweeps: PeriodicWorker
    failed: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.consumer.start()
        self.sweeps.start()

    def stop(self) -> None:
        self.client.running.set()
        self.sweeps.stop()
        self.consumer.stop()

    def freeze(self) -> None:
        self.client.running.clear()
        wait_for(f"{self.name} to be frozen", self.client.parked.is_set, 30)

    def thaw(self) -> None:
        self.client.running.set()

    def partitions(self) -> set[int]:
        return {p for topic, p in self.consumer.assigned if topic == TRANSACTIONS.name}


@dataclass
class Setting:
    bootstrap: str
    db: Database
    group: str
    partition_count: int
    replicas: list[Replica] = field(default_factory=list)

    def replica(self, name: str) -> Replica:
        client = HeldClient(
            Consumer(consumer_config(self.bootstrap, self.group, f"paysaga-test-{name}"))
        )
        consumer = EventConsumer(
            self.db,
            client,  # type: ignore[arg-type]
            {TRANSACTIONS.name: FinishOrders},
            topics=SAGA_TOPICS,
            high_watermarks=HighWatermarks(self.bootstrap),
        )
        deadlines = SagaDeadlines(self.db, deadline_s=2)
        deadlines.watch(consumer)
        failed: list[int] = []

        def sweep() -> int:
            count = deadlines()
            failed.append(count)
            return count

        replica = Replica(name, client, consumer, PeriodicWorker(name, sweep, 0.1), failed)
        self.replicas.append(replica)
        return replica

    def users_on(self, partitions: set[int], per_partition: int) -> list[int]:
        """`per_partition` fresh user ids whose outcomes arrive on each of `partitions`."""
        found: dict[int, list[int]] = {p: [] for p in partitions}
        user = 1 + uuid.uuid4().int % 10**9
        while any(len(users) < per_partition for users in found.values()):
            partition = outcome_partition(user, self.partition_count)
            if partition in found and len(found[partition]) < per_partition:
                found[partition].append(user)
            user += 1
        return [u for users in found.values() for u in users]

    def orders(self, users: list[int], due_in_s: float) -> dict[str, int]:
        """One CREATED order per user, due in `due_in_s`: order id -> user id."""
        created = {str(uuid.uuid4()): user for user in users}
        due_at = utcnow() + timedelta(seconds=due_in_s)
        with self.db.write() as session:
            for order_id, user in created.items():
                session.add(
                    Order(
                        id=order_id, user_id=user, product_id=1, price_cents=PRICE, status="CREATED"
                    )
                )
                session.add(SagaDeadline(order_id=order_id, due_at=due_at))
        return created

    def publish_outcomes(self, orders: dict[str, int]) -> None:
        """A CHARGE recorded for each order, keyed by its user as the Payment service does,
        through a producer configured as the services' are."""
        producer = Producer(producer_config(self.bootstrap, "paysaga-test-outcomes"))
        for order_id, user in orders.items():
            event = events_pb2.TransactionRecorded(
                order_id=order_id,
                user_id=user,
                amount_cents=PRICE,
                status=events_pb2.TRANSACTION_STATUS_SUCCESSFUL,
                transaction_id=str(uuid.uuid4()),
                kind=payments_pb2.TRANSACTION_KIND_CHARGE,
            )
            meta = EventMeta.new(
                ce_type=TRANSACTIONS.ce_type, source=TRANSACTIONS.source, subject=order_id
            )
            producer.produce(
                TRANSACTIONS.name,
                key=str(user).encode(),
                value=event.SerializeToString(),
                headers=meta.headers(),
            )
        assert producer.flush(30) == 0, "outcomes not confirmed by the broker"

    def statuses(self, order_ids: Any) -> dict[str, str]:
        with self.db.read() as session:
            return {o: session.get(Order, o).status for o in order_ids}  # type: ignore[union-attr]

    def all_ended(self, order_ids: Any) -> bool:
        return "CREATED" not in self.statuses(order_ids).values()


@pytest.fixture
def setting(kafka_broker: Any, tmp_path: Path) -> Iterator[Setting]:
    url = f"sqlite:///{tmp_path}/order.db"
    migrate(url, MIGRATIONS)
    group = f"deadlines-{uuid.uuid4().hex[:8]}"
    bootstrap = kafka_broker.bootstrap_servers
    pin_groups_to_end(bootstrap, {group: [TRANSACTIONS.name]})
    count = len(HighWatermarks(bootstrap)(TRANSACTIONS.name))
    assert count >= 2, "these tests need a transactions topic of 2 partitions or more"
    setting = Setting(bootstrap, Database(url), group, count)
    yield setting
    for replica in setting.replicas:
        replica.stop()
    setting.db.dispose()


def settled(a: Replica, b: Replica, count: int) -> bool:
    """Both hold partitions, and together all of them, none twice."""
    mine, theirs = a.partitions(), b.partitions()
    return bool(mine) and bool(theirs) and not mine & theirs and len(mine | theirs) == count


def test_a_replica_never_fails_the_orders_whose_outcomes_another_holds_unread(
    setting: Setting,
) -> None:
    a, b = setting.replica("order-a"), setting.replica("order-b")
    a.start()
    b.start()
    count = setting.partition_count
    wait_for("the two replicas to share the partitions", lambda: settled(a, b, count), 60)
    b.freeze()
    a_partitions, b_partitions = a.partitions(), b.partitions()
    paid_a = setting.orders(setting.users_on(a_partitions, 2), due_in_s=2)
    paid_b = setting.orders(setting.users_on(b_partitions, 2), due_in_s=2)
    unpaid_a = setting.orders(setting.users_on(a_partitions, 1), due_in_s=2)
    unpaid_b = setting.orders(setting.users_on(b_partitions, 1), due_in_s=2)
    setting.publish_outcomes({**paid_a, **paid_b})

    # A applies its outcomes and fails its unpaid orders once due; B's wait, unread.
    wait_for("replica A's orders to end", lambda: setting.all_ended({**paid_a, **unpaid_a}), 60)
    assert set(setting.statuses(paid_a).values()) == {"COMPLETED"}
    assert set(setting.statuses(unpaid_a).values()) == {"FAILED"}
    before = sum(a.failed)
    wait_for("A to sweep again", lambda: len(a.failed) > before + 10, 30)
    assert set(setting.statuses({**paid_b, **unpaid_b}).values()) == {"CREATED"}

    b.thaw()
    wait_for("replica B's orders to end", lambda: setting.all_ended({**paid_b, **unpaid_b}), 60)
    assert set(setting.statuses(paid_b).values()) == {"COMPLETED"}
    assert set(setting.statuses(unpaid_b).values()) == {"FAILED"}
    # Each replica failed the unpaid orders of its own partitions: together, all of them.
    assert (sum(a.failed), sum(b.failed)) == (len(unpaid_a), len(unpaid_b))


def test_the_gate_rearms_after_an_outage_in_the_middle_of_a_rebalance(
    setting: Setting, kafka_broker: Any
) -> None:
    a = setting.replica("order-a")
    a.start()
    every = set(range(setting.partition_count))
    wait_for("replica A to hold every partition", lambda: a.partitions() == every, 60)
    a.freeze()
    paid = setting.orders(setting.users_on(every, 1), due_in_s=3)
    unpaid = setting.orders(setting.users_on(every, 1), due_in_s=3)
    setting.publish_outcomes(paid)
    b = setting.replica("order-b")
    b.start()  # joins: the rebalance waits for frozen A to give partitions up
    outage_began = utcnow()
    kafka_broker.stop()
    try:
        a.thaw()
        # The deadlines pass during the outage; nothing is failed while no watermark is known.
        wait_for(
            "the deadlines to pass, and 5 s more",
            lambda: utcnow() > outage_began + timedelta(seconds=8),
            30,
        )
        assert "FAILED" not in setting.statuses({**paid, **unpaid}).values()
    finally:
        kafka_broker.start()
    wait_for("every order to end", lambda: setting.all_ended({**paid, **unpaid}), 120)
    assert set(setting.statuses(paid).values()) == {"COMPLETED"}
    assert set(setting.statuses(unpaid).values()) == {"FAILED"}
    assert sum(a.failed) + sum(b.failed) == len(unpaid)
