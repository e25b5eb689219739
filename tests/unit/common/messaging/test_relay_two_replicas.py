"""Two relays on one PostgreSQL outbox (two replicas): leases keep each key's rows in order,
publish each row once, and lose none, even when a relay dies between the broker's
confirmation and its delete.

Each relay has its own Database (as a replica has) and a stand-in producer; every record
produced by either lands in one shared log, in the order produce() was called: the order a
partition receives them (one relay's records keep their order through its idempotent
producer, and a relay produces a row of a key only once the earlier rows of that key are
confirmed and deleted).
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlmodel import select

from paysaga.v1 import events_pb2
from services.common.messaging.journal import TABLES as JOURNAL_TABLES
from services.common.messaging.outbox import OutboxRecord, OutboxWriter, ParkedRecord
from services.common.messaging.relay import OutboxRelay
from services.common.persistence.db import Database
from services.saga.topics import SAGA_TOPICS

pytestmark = [pytest.mark.unit, pytest.mark.postgres]


class SharedLog:
    """What the partitions received: (relay, order id, key), in order."""

    def __init__(self) -> None:
        self.entries: list[tuple[str, str, bytes]] = []
        self.lock = threading.Lock()

    def order_ids(self, key: bytes | None = None, relay: str | None = None) -> list[str]:
        with self.lock:
            return [
                o
                for r, o, k in self.entries
                if (key is None or k == key) and (relay is None or r == relay)
            ]


class LoggingProducer:
    """Appends each record to the shared log when produced; confirms it when the test says
    (`hold`), else after a short random delay, on whichever thread polls or flushes."""

    def __init__(self, name: str, log: SharedLog, *, hold: bool = False) -> None:
        self.name = name
        self.log = log
        self.hold = hold
        self._pending: list[Any] = []
        self._lock = threading.Condition()
        self._random = random.Random(name)

    def produce(self, topic: str, key: bytes, value: bytes, headers: Any, on_delivery: Any) -> None:
        order_id = events_pb2.OrderPurchased.FromString(value).order_id
        with self.log.lock:
            self.log.entries.append((self.name, order_id, key))
        with self._lock:
            self._pending.append(on_delivery)

    def release(self) -> None:
        with self._lock:
            self.hold = False
            self._lock.notify_all()

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def poll(self, timeout: float) -> int:
        return self._serve(timeout)

    def flush(self, timeout: float) -> int:
        self._serve(timeout)
        return len(self)

    def _serve(self, timeout: float) -> int:
        with self._lock:
            if self.hold or not self._pending:
                self._lock.wait(timeout)
                return 0
            ready, self._pending = self._pending, []
        time.sleep(self._random.uniform(0, 0.004))  # the broker's round trip
        for callback in ready:
            callback(None, None)
        return len(ready)


@pytest.fixture
def url(postgres_database: str) -> str:
    Database(postgres_database).create_tables([OutboxRecord, ParkedRecord, *JOURNAL_TABLES])
    return postgres_database


@pytest.fixture
def log() -> SharedLog:
    return SharedLog()


Relays = Callable[..., tuple[OutboxRelay, Database]]


@pytest.fixture
def replica(url: str, log: SharedLog) -> Iterator[Relays]:
    """Starts a relay (with its own Database, as a replica has) on the shared outbox."""
    started: list[tuple[OutboxRelay, LoggingProducer]] = []

    def start(name: str, *, hold: bool = False, **kwargs: Any) -> tuple[OutboxRelay, Database]:
        db = Database(url, instance=name)
        producer = LoggingProducer(name, log, hold=hold)
        kwargs.setdefault("idle_poll_s", 0.1)
        relay = OutboxRelay(db, lambda: producer, **kwargs)  # type: ignore[arg-type, return-value]
        relay.start()
        started.append((relay, producer))
        return relay, db

    yield start
    for relay, producer in started:
        producer.release()
        relay.stop(timeout_s=5)


def stage(db: Database, *order_ids: str, user_id: int = 1) -> None:
    with db.write() as session:
        outbox = OutboxWriter(SAGA_TOPICS)
        for order_id in order_ids:
            event = events_pb2.OrderPurchased(order_id=order_id, user_id=user_id, amount_cents=1)
            outbox.add_event(event, key=user_id, subject=order_id)
        outbox.write(session)


def remaining(url: str) -> int:
    with Database(url).read() as session:
        return len(session.exec(select(OutboxRecord)).all())


def eventually(check: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "the relays did not get there in time"
        time.sleep(0.01)


def test_a_key_in_flight_on_one_relay_is_held_back_from_the_other(
    replica: Relays, log: SharedLog, url: str
) -> None:
    a, db_a = replica("a", hold=True)
    stage(db_a, "first", user_id=1)
    eventually(lambda: log.order_ids(relay="a") == ["first"])
    _, db_b = replica("b")
    stage(db_b, "second", user_id=1)  # same key: waits for "first" to be confirmed
    stage(db_b, "other", user_id=2)  # another key: goes at once
    eventually(lambda: log.order_ids(relay="b") == ["other"])
    time.sleep(0.5)  # b is woken by its commit and polls: "second" is still held back
    assert log.order_ids(key=b"1") == ["first"]
    a.producer.release()  # type: ignore[attr-defined]
    eventually(lambda: log.order_ids(key=b"1") == ["first", "second"])
    eventually(lambda: remaining(url) == 0)


def test_the_relay_holding_a_key_takes_the_rows_it_held_back_once_it_settles(
    replica: Relays, log: SharedLog, url: str
) -> None:
    # b's claim held "second" back behind a's "first"; a's delete says rows of that key wait
    # unleased behind it, and a claims them at once: neither waits for a commit or a poll,
    # and b's own rechecks have backed off by then (a takes it, not b).
    a, db_a = replica("a", hold=True, idle_poll_s=60.0)
    stage(db_a, "first", user_id=1)
    eventually(lambda: log.order_ids(relay="a") == ["first"])
    _, db_b = replica("b", idle_poll_s=60.0)
    stage(db_b, "second", user_id=1)
    time.sleep(3.0)  # b looked again after 5, 10, 20 ... ms: its next look is 5.1 s in
    assert log.order_ids(key=b"1") == ["first"]
    a.producer.release()  # type: ignore[attr-defined]
    eventually(lambda: log.order_ids(key=b"1") == ["first", "second"], timeout_s=2.0)
    assert log.order_ids(relay="a") == ["first", "second"]
    eventually(lambda: remaining(url) == 0)


def test_a_backlog_behind_a_held_key_is_drained_without_waiting_for_rechecks(
    replica: Relays, log: SharedLog, url: str
) -> None:
    # A dead relay's lease holds key 1; thirty rows, each of a key of its own, wait behind
    # its held row. Each claim of two (its window full, one held back) takes one and claims
    # again at once; the rechecks alone (5 ms, then twice as long each time) would need
    # minutes, and no settle finds rows of its own keys behind.
    dead = Database(url, instance="dead")
    stage(dead, "first", user_id=1)
    OutboxRelay(dead, lambda: LoggingProducer("dead", log)).claims.claim(10)  # type: ignore[arg-type, return-value]
    stage(dead, "held", user_id=1)
    for n in range(30):
        stage(dead, f"other-{n}", user_id=n + 2)
    replica("b", batch_size=2, idle_poll_s=60.0)
    others = [f"other-{n}" for n in range(30)]
    eventually(lambda: len(log.order_ids(relay="b")) == 30, timeout_s=3.0)
    assert log.order_ids(relay="b") == others
    assert log.order_ids(key=b"1") == []  # still held by the dead relay's lease


def test_a_relay_dying_between_publish_and_delete_costs_copies_the_inbox_drops_only(
    replica: Relays, log: SharedLog, url: str
) -> None:
    dead = Database(url, instance="dead")
    stage(dead, "first", "second", user_id=1)
    # The dead relay claimed both rows and the broker confirmed them; it died before its
    # delete. Its lease holds them (and the rest of their key) back until it ends.
    dead_relay = OutboxRelay(dead, lambda: LoggingProducer("dead", log), lease_s=1.0)  # type: ignore[arg-type, return-value]
    claimed = dead_relay.claims.claim(10)
    for row in claimed:
        order_id = events_pb2.OrderPurchased.FromString(row.value or b"").order_id
        log.entries.append(("dead", order_id, row.key or b""))
    stage(dead, "third", user_id=1)
    began = time.monotonic()
    _, db_b = replica("b")
    stage(db_b, "other", user_id=2)
    eventually(lambda: log.order_ids(relay="b") == ["other"])
    eventually(lambda: len(log.order_ids(relay="b")) == 4)
    assert time.monotonic() - began >= 0.9  # not before the lease ended
    # b published the dead relay's rows again, then "third": in order, nothing lost.
    assert log.order_ids(key=b"1") == ["first", "second", "first", "second", "third"]
    assert first_copies(log.order_ids(key=b"1")) == ["first", "second", "third"]
    eventually(lambda: remaining(url) == 0)


def test_a_round_in_flight_longer_than_the_lease_keeps_its_rows(
    replica: Relays, log: SharedLog, url: str
) -> None:
    a, db_a = replica("a", hold=True, lease_s=0.6)  # renewed every 0.2 s while in flight
    stage(db_a, "slow", user_id=1)
    eventually(lambda: log.order_ids(relay="a") == ["slow"])
    replica("b")
    time.sleep(1.5)  # more than twice the lease
    assert log.order_ids(relay="b") == []
    a.producer.release()  # type: ignore[attr-defined]
    eventually(lambda: remaining(url) == 0)
    assert log.order_ids() == ["slow"]


def test_two_relays_under_concurrent_writers_publish_every_row_once_in_key_order(
    replica: Relays, log: SharedLog, url: str
) -> None:
    _, db_a = replica("a", batch_size=7)
    _, db_b = replica("b", batch_size=7)
    staged: dict[int, list[str]] = {1: [], 2: [], 3: []}
    lock = threading.Lock()

    def writer(db: Database, name: str) -> None:
        rng = random.Random(name)
        for n in range(40):
            user = rng.choice([1, 2, 3])
            order_id = f"{name}-{n}"
            with lock:  # the staged order of a key is its commit order
                stage(db, order_id, user_id=user)
                staged[user].append(order_id)
            time.sleep(rng.uniform(0, 0.003))

    writers = [
        threading.Thread(target=writer, args=(db, f"w{i}-{db.instance}"))
        for i, db in enumerate([db_a, db_b, db_a, db_b])
    ]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()
    eventually(lambda: remaining(url) == 0, timeout_s=30)
    for user, order_ids in staged.items():
        assert log.order_ids(key=str(user).encode()) == order_ids
    assert {r for r, _, _ in log.entries} == {"a", "b"}  # both relays took part


def first_copies(order_ids: list[str]) -> list[str]:
    """What a consumer applies: each event's first copy (its inbox drops the others)."""
    seen: set[str] = set()
    return [o for o in order_ids if not (o in seen or seen.add(o))]  # type: ignore[func-returns-value]


def test_a_relay_whose_claim_was_held_back_looks_again_without_waiting_for_its_poll(
    replica: Relays, log: SharedLog, url: str
) -> None:
    # The other relay claims the held-back rows itself once it settles, unless this one's
    # claim had them locked at that moment: so this one looks again, soon, and more rarely
    # while they stay held (here the other relay dies, and its lease ends).
    dead = Database(url, instance="dead")
    stage(dead, "first", user_id=1)
    dying = OutboxRelay(dead, lambda: LoggingProducer("dead", log), lease_s=0.5)  # type: ignore[arg-type, return-value]
    dying.claims.claim(10)  # claimed, then gone before producing it
    _, db_b = replica("b", idle_poll_s=60.0)  # no poll would help within the test
    stage(db_b, "second", user_id=1)
    eventually(lambda: log.order_ids(key=b"1") == ["first", "second"], timeout_s=5.0)
