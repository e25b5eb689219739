"""A consumer client that fails for good (e.g. a static member fenced) is replaced, not kept."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError

from services.common.messaging.consumer import EventConsumer
from services.common.persistence.db import Database
from services.saga.topics import SAGA_TOPICS

pytestmark = pytest.mark.unit


class FatalRecord:
    """What poll() returns for a fatal client error (fatal() is unset, the code says it)."""

    def error(self) -> KafkaError:
        return KafkaError(KafkaError._FATAL, "Fatal error: static consumer fenced")


class FakeClient:
    def __init__(self, fail: bool) -> None:
        self.fail = fail
        self.closed = False
        self.subscribed: list[str] = []
        self.polls = 0

    def subscribe(self, topics: list[str], **_callbacks: Any) -> None:
        self.subscribed = topics

    def poll(self, _timeout: float) -> Any:
        self.polls += 1
        if self.fail:
            return FatalRecord()
        time.sleep(0.01)
        return None

    def consume(self, *_: Any) -> list[Any]:
        return []

    def assignment(self) -> list[Any]:
        return [("orders", 0)]

    def close(self) -> None:
        self.closed = True


def test_a_fatal_client_is_closed_and_replaced(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/x.db")
    clients = [FakeClient(fail=True), FakeClient(fail=False)]
    made = iter(clients[1:])
    consumer = EventConsumer(
        db,
        clients[0],  # type: ignore[arg-type]
        {"orders": lambda *_: None},  # type: ignore[dict-item, arg-type]
        topics=SAGA_TOPICS,
        new_consumer=lambda: next(made),  # type: ignore[arg-type, return-value]
    )
    consumer.start()
    deadline = time.monotonic() + 10
    while not clients[1].polls and time.monotonic() < deadline:
        time.sleep(0.01)
    consumer.stop()
    assert clients[0].closed and consumer.consumer is clients[1]
    assert clients[1].subscribed == ["orders"] and clients[1].polls


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")
def test_without_a_factory_the_worker_stops_so_the_service_exits(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/x.db")
    consumer = EventConsumer(
        db,
        FakeClient(fail=True),  # type: ignore[arg-type]
        {"orders": lambda *_: None},  # type: ignore[dict-item]
        topics=SAGA_TOPICS,
    )
    consumer.start()
    deadline = time.monotonic() + 10
    while consumer.is_alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not consumer.is_alive()
