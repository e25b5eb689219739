"""PostgreSQL's relay wake-up: LISTEN/NOTIFY on the service's database carries a commit's
announcement to the one relay process holding the wake-up lock (another takes over when it
ends), folds bursts, survives a lost connection, and wakes
a relay in another process that would otherwise only poll."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from paysaga.v1 import events_pb2
from services.common.messaging.journal import TABLES as JOURNAL_TABLES
from services.common.messaging.outbox import OutboxRecord, OutboxWriter, ParkedRecord
from services.common.messaging.relay import OutboxRelay
from services.common.persistence.db import Database
from services.common.persistence.wakeup import NotifyWakeup, WakeupListener, channel_for
from services.saga.topics import SAGA_TOPICS

pytestmark = [pytest.mark.unit, pytest.mark.postgres]


def eventually(check: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "not woken in time"
        time.sleep(0.01)


def test_an_announcement_wakes_one_relay_process_and_another_takes_over_when_it_ends(
    postgres_database: str,
) -> None:
    writer, first, second = (NotifyWakeup(postgres_database) for _ in range(3))
    first.listen()
    second.listen()
    try:
        assert isinstance(channel_for(postgres_database), NotifyWakeup)
        assert first.listening and not second.listening, "one of them holds the lock"
        assert not first.receive(0.1), "nothing announced yet"
        for _ in range(50):  # a burst of commits: folded, one wake-up takes them all
            writer.announce()
        assert first.receive(2.0)
        assert not second.receive(0.2), "the others are not woken: their relays poll"
        time.sleep(0.2)  # whatever the sender still folds in arrives now
        first.receive(0.0)
        assert not first.receive(0.2), "the burst was taken at once"
        first.close()  # its process ends: its connection, and the lock with it
        eventually(lambda: second.receive(0.1))  # takes over, and its relay looks once
        assert second.listening
        writer.announce()
        eventually(lambda: second.receive(0.2))
    finally:
        for channel in (writer, first, second):
            channel.close()


def test_a_listener_whose_connection_is_lost_listens_again(postgres_database: str) -> None:
    writer, relay_side = NotifyWakeup(postgres_database), NotifyWakeup(postgres_database)
    relay_side.listen()
    db = Database(postgres_database)
    try:
        with db.write() as session:
            session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid() "
                    "AND datname = current_database()"
                )
            )
        woken = [relay_side.receive(0.5) for _ in range(3)]  # notices, then connects again
        assert any(woken), "a listener that lost its connection looks once it is back"
        writer.announce()
        eventually(lambda: relay_side.receive(0.2))
    finally:
        writer.close()
        relay_side.close()
        db.dispose()


def test_when_the_listening_session_is_cut_off_another_relay_takes_over(
    postgres_database: str,
) -> None:
    first, second = NotifyWakeup(postgres_database), NotifyWakeup(postgres_database)
    first.listen()
    second.listen()
    db = Database(postgres_database)
    try:
        assert first.listening and not second.listening
        with db.write() as session:  # the server ends the listener's session: the lock goes
            session.execute(
                text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE query LIKE 'LISTEN %' AND pid <> pg_backend_pid() "
                    "AND datname = current_database()"
                )
            )
        eventually(lambda: second.receive(0.1))  # takes over, and its relay looks once
        assert second.listening
    finally:
        first.close()
        second.close()
        db.dispose()


def test_the_listening_connection_has_tcp_keepalives_on_the_server_s_side(
    postgres_database: str,
) -> None:
    # So a server that lost the listener's host ends its session, and frees the lock, in
    # seconds (the client's keepalives are libpq's own, in the same connection string).
    channel = NotifyWakeup(postgres_database)
    channel.listen()
    try:
        listener = channel._listener
        assert listener is not None
        shown = {
            name: listener.execute(f"SHOW {name}").fetchone()
            for name in ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_user_timeout")
        }
        assert shown == {
            "tcp_keepalives_idle": ("5",),
            "tcp_keepalives_interval": ("2",),
            "tcp_user_timeout": ("10000",),
        }
        assert listener.info.get_parameters()["keepalives_idle"] == "5"
    finally:
        channel.close()


def test_a_commit_in_an_api_process_wakes_the_worker_s_relay(postgres_database: str) -> None:
    api, worker = Database(postgres_database), Database(postgres_database)
    worker.create_tables([OutboxRecord, ParkedRecord, *JOURNAL_TABLES])
    api.outbox_signal.announce_through(NotifyWakeup(postgres_database))
    channel = NotifyWakeup(postgres_database)
    channel.listen()
    listener = WakeupListener(channel, worker.outbox_signal)
    sent: list[str] = []
    relay = OutboxRelay(worker, lambda: _Confirming(sent), idle_poll_s=60)  # type: ignore[arg-type, return-value]
    listener.start()
    relay.start()
    try:
        time.sleep(0.3)  # the relay's first look at start is over: only a wake-up helps now
        with api.write() as session:
            outbox = OutboxWriter(SAGA_TOPICS)
            event = events_pb2.OrderPurchased(order_id="o1", user_id=1, amount_cents=1)
            outbox.add_event(event, key=1, subject="o1")
            outbox.write(session)
        eventually(lambda: sent == ["o1"], timeout_s=5.0)  # long before its 60 s poll
    finally:
        relay.stop(5.0)
        listener.stop(5.0)
        api.dispose()
        worker.dispose()


class _Confirming:
    """A producer that confirms every record at once."""

    def __init__(self, sent: list[str]) -> None:
        self.sent = sent
        self._pending: list[tuple[str, Any]] = []

    def produce(self, topic: str, key: bytes, value: bytes, headers: Any, on_delivery: Any) -> None:
        self._pending.append((events_pb2.OrderPurchased.FromString(value).order_id, on_delivery))

    def __len__(self) -> int:
        return len(self._pending)

    def poll(self, _timeout: float) -> int:
        ready, self._pending = self._pending, []
        for order_id, callback in ready:
            self.sent.append(order_id)
            callback(None, None)
        return len(ready)

    def flush(self, timeout: float) -> int:
        self.poll(timeout)
        return 0
