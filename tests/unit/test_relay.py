"""The outbox relay over a real SQLite file, with a stand-in producer whose deliveries we choose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from paysaga.v1 import events_pb2
from services.common.db import Database
from services.common.outbox import OutboxRecord, OutboxWriter
from services.common.relay import OutboxRelay

pytestmark = pytest.mark.unit


class FakeError:
    def fatal(self) -> bool:
        return False

    def __str__(self) -> str:
        return "broker said no"


class FakeProducer:
    """Confirms every record on flush, except the order ids listed in `refuse`."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.refuse: set[str] = set()
        self._pending: list[tuple[str, Any]] = []

    def produce(self, topic: str, key: bytes, value: bytes, headers: Any, on_delivery: Any) -> None:
        order_id = events_pb2.OrderPurchased.FromString(value).order_id
        self._pending.append((order_id, on_delivery))

    def poll(self, _timeout: float) -> int:
        return 0

    def flush(self, _timeout: float) -> int:
        for order_id, callback in self._pending:
            refused = order_id in self.refuse
            if not refused:
                self.sent.append(order_id)
            callback(FakeError() if refused else None, None)
        self._pending = []
        return 0


@pytest.fixture
def db(tmp_path: Path) -> Database:
    database = Database(f"sqlite:///{tmp_path}/relay.db")
    database.create_tables([OutboxRecord])
    return database


def stage(db: Database, *order_ids: str) -> None:
    with db.write() as session:
        outbox = OutboxWriter()
        for order_id in order_ids:
            event = events_pb2.OrderPurchased(order_id=order_id, user_id=1, amount_cents=1)
            outbox.add_event(event, key=1, subject=order_id)
        outbox.write(session)


def remaining(db: Database) -> int:
    with db.read() as session:
        return len(session.exec(select(OutboxRecord)).all())


def test_publishes_in_order_and_deletes_what_was_confirmed(db: Database) -> None:
    producer = FakeProducer()
    relay = OutboxRelay(db, lambda: producer)  # type: ignore[arg-type, return-value]
    stage(db, "a", "b", "c")
    assert relay.publish_pending() == 3
    assert producer.sent == ["a", "b", "c"]
    assert relay.publish_pending() == 0  # nothing is sent twice
    relay.delete_published(now=True)
    assert remaining(db) == 0


def test_rows_staged_after_everything_was_deleted_are_still_published(db: Database) -> None:
    producer = FakeProducer()
    relay = OutboxRelay(db, lambda: producer)  # type: ignore[arg-type, return-value]
    stage(db, "a", "b")
    relay.publish_pending()
    relay.delete_published(now=True)
    stage(db, "c")
    relay.publish_pending()
    assert producer.sent == ["a", "b", "c"]


def test_a_refused_record_and_those_after_it_are_sent_again(db: Database) -> None:
    producer = FakeProducer()
    relay = OutboxRelay(db, lambda: producer)  # type: ignore[arg-type, return-value]
    stage(db, "a", "b", "c")
    producer.refuse = {"b"}
    assert relay.publish_pending() == 1
    producer.refuse = set()
    assert relay.publish_pending() == 2
    assert producer.sent == ["a", "c", "b", "c"]  # c twice: consumers drop it by event id
    relay.delete_published(now=True)
    assert remaining(db) == 0


def test_unconfirmed_rows_stay_in_the_outbox(db: Database) -> None:
    producer = FakeProducer()
    relay = OutboxRelay(db, lambda: producer)  # type: ignore[arg-type, return-value]
    stage(db, "a", "b")
    producer.refuse = {"a", "b"}
    assert relay.publish_pending() == 0
    relay.delete_published(now=True)
    assert remaining(db) == 2
