"""`Database.write_core()`: a write transaction on a Core connection keeps what
`Database.write()` promises. It commits on success and rolls back on an exception; its
after-commit callbacks run only after a commit, and a failing one never undoes it; the
outbox's signal and the replica's name reach the writers; on SQLite it holds the write lock
from its start. The hot path's writers take it and a `Session` alike."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, func, select, text
from sqlalchemy.exc import DBAPIError

from services.common.messaging import inbox
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import SagaStep
from services.common.messaging.outbox import OutboxRecord, OutboxWriter
from services.common.persistence.db import Database, is_transient, run_after_commit
from services.common.persistence.prepared import Prepared
from services.common.persistence.writer_lock import NestedWrite

pytestmark = pytest.mark.unit


def _inbox_ids(db: Database) -> list[str]:
    with db.read() as session:
        return sorted(session.execute(select(ProcessedEvent.event_id)).scalars())  # type: ignore[arg-type]


def test_a_transaction_commits_what_it_wrote_and_then_runs_its_callbacks(store_url: str) -> None:
    db = Database(store_url)
    db.create_tables([ProcessedEvent])
    seen: list[list[str]] = []
    with db.write_core() as transaction:
        assert inbox.record_new(transaction, [("a", "orders"), ("b", "orders")]) == {"a", "b"}
        run_after_commit(transaction, lambda: seen.append(_inbox_ids(db)))
        assert seen == []
    assert seen == [["a", "b"]]  # the callback ran after the commit: it read both rows


def test_an_exception_rolls_everything_back_and_runs_no_callback(store_url: str) -> None:
    db = Database(store_url)
    db.create_tables([ProcessedEvent])
    called: list[str] = []
    with pytest.raises(RuntimeError, match="handler failed"), db.write_core() as transaction:
        inbox.record_new(transaction, [("a", "orders")])
        run_after_commit(transaction, lambda: called.append("after commit"))
        raise RuntimeError("handler failed")
    assert _inbox_ids(db) == []
    assert called == []
    assert db._writer.pool.checkedout() == 0  # type: ignore[attr-defined]
    with db.write_core() as transaction:  # the connection went back to the pool clean
        assert inbox.record_new(transaction, [("a", "orders")]) == {"a"}
    assert _inbox_ids(db) == ["a"]


def test_a_failing_callback_leaves_the_commit_standing_and_the_others_run(
    store_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = Database(store_url)
    db.create_tables([ProcessedEvent])
    called: list[str] = []

    def fail() -> None:
        raise ValueError("a callback's own trouble")

    with db.write_core() as transaction:
        inbox.record_new(transaction, [("a", "orders")])
        run_after_commit(transaction, fail)
        run_after_commit(transaction, lambda: called.append("second"))
    assert called == ["second"]
    assert _inbox_ids(db) == ["a"]
    assert "after-commit callback failed" in caplog.text


def test_the_outbox_wakes_the_relay_only_once_its_rows_are_committed(store_url: str) -> None:
    db = Database(store_url, instance="order-7")
    db.create_tables([OutboxRecord, SagaStep])
    outbox = OutboxWriter(None)
    outbox.add_record(topic="orders", key=b"k", value=b"v", headers=[], event_id="e1")
    db.outbox_signal.clear()
    with db.write_core() as transaction:
        assert transaction.info["replica"] == "order-7"
        outbox.write(transaction)
        assert not db.outbox_signal.is_set()
    assert db.outbox_signal.is_set()
    with db.read() as session:
        assert session.execute(select(func.count()).select_from(OutboxRecord)).scalar_one() == 1


def test_on_sqlite_the_transaction_holds_the_write_lock_from_its_start(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/store.db")
    db.create_tables([ProcessedEvent])
    other = sqlite3.connect(tmp_path / "store.db", timeout=0, isolation_level=None)
    try:
        with db.write_core():  # no statement yet: BEGIN IMMEDIATE has taken the lock
            with pytest.raises(sqlite3.OperationalError, match="locked"):
                other.execute("BEGIN IMMEDIATE")
        other.execute("BEGIN IMMEDIATE")  # free again once committed
        other.execute("ROLLBACK")
    finally:
        other.close()


def test_a_session_and_a_core_transaction_write_the_same_rows(store_url: str) -> None:
    db = Database(store_url)
    db.create_tables([ProcessedEvent])
    with db.write() as session:
        assert inbox.record_new(session, [("a", "orders"), ("b", "orders")]) == {"a", "b"}
    with db.write_core() as transaction:
        assert inbox.record_new(transaction, [("b", "orders"), ("c", "orders")]) == {"c"}
    assert _inbox_ids(db) == ["a", "b", "c"]


def test_a_commit_that_fails_raises_runs_no_callback_and_frees_the_connection_and_lock(
    store_url: str,
) -> None:
    db = Database(store_url)
    db.create_tables([ProcessedEvent])
    called: list[str] = []

    def refuse(_connection: Any) -> None:
        raise RuntimeError("the commit failed")

    event.listen(db._writer, "commit", refuse)
    with pytest.raises(RuntimeError, match="the commit failed"), db.write_core() as transaction:
        inbox.record_new(transaction, [("a", "orders")])
        run_after_commit(transaction, lambda: called.append("after commit"))
    event.remove(db._writer, "commit", refuse)
    assert called == []
    assert db._writer.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert _inbox_ids(db) == []  # rolled back
    with db.write_core() as transaction:  # neither the lock nor the connection is held
        assert inbox.record_new(transaction, [("a", "orders")]) == {"a"}
    assert db._writer.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_on_sqlite_a_second_writer_of_the_process_waits_for_the_first_to_commit(
    tmp_path: Path,
) -> None:
    db = Database(f"sqlite:///{tmp_path}/store.db")
    db.create_tables([ProcessedEvent])
    order: list[str] = []
    first_in = threading.Event()

    def second() -> None:
        first_in.wait(5)
        with db.write_core() as transaction:
            order.append("second began")
            inbox.record_new(transaction, [("b", "orders")])

    thread = threading.Thread(target=second)
    thread.start()
    with db.write_core() as transaction:
        first_in.set()
        inbox.record_new(transaction, [("a", "orders")])
        thread.join(0.3)  # it cannot begin while this one holds the writers' lock
        order.append("first commits")
    thread.join(5)
    assert order == ["first commits", "second began"]
    assert _inbox_ids(db) == ["a", "b"]


def test_on_sqlite_a_write_inside_another_is_refused(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/store.db")
    db.create_tables([ProcessedEvent])
    with pytest.raises(NestedWrite), db.write_core(), db.write_core():
        pass
    with db.write_core() as transaction:  # the lock was given back
        assert inbox.record_new(transaction, [("a", "orders")]) == {"a"}


@pytest.mark.postgres
def test_on_postgres_only_relay_bookkeeping_commits_without_waiting_for_the_wal_flush(
    postgres_database: str,
) -> None:
    db = Database(postgres_database)
    try:
        with db.write_core() as transaction:
            assert transaction.execute(text("SHOW synchronous_commit")).scalar_one() == "on"
        with db.write_core(durable=False) as transaction:
            assert transaction.execute(text("SHOW synchronous_commit")).scalar_one() == "off"
    finally:
        db.dispose()


def test_a_statement_committed_alone_returns_its_rows_and_stays_committed(store_url: str) -> None:
    db = Database(store_url)
    db.create_tables([ProcessedEvent])
    insert = text(
        "INSERT INTO inbox (event_id, topic, processed_at) "
        "VALUES ('a', 'orders', CURRENT_TIMESTAMP) RETURNING event_id"
    )
    assert [tuple(row) for row in db.commit_alone(insert)] == [("a",)]
    assert _inbox_ids(db) == ["a"]  # committed: another connection reads it
    assert db.commit_alone(text("DELETE FROM inbox WHERE event_id = :id"), {"id": "a"}) == []
    assert _inbox_ids(db) == []
    # A Prepared statement goes to the driver's cursor: its rows are plain tuples.
    assert db.commit_alone(Prepared(insert)) == [("a",)]
    assert _inbox_ids(db) == ["a"]
    deleted = Prepared(text("DELETE FROM inbox WHERE event_id = :id"))
    assert db.commit_alone(deleted, {"id": "a"}) == []
    assert _inbox_ids(db) == []


@pytest.mark.postgres
def test_on_postgres_a_statement_committed_alone_is_its_own_transaction_and_relaxed(
    postgres_database: str,
) -> None:
    db = Database(postgres_database)
    try:
        own = text(  # no BEGIN before it: its transaction started with it
            "SELECT xact_start = query_start, current_setting('synchronous_commit') "
            "FROM pg_stat_activity WHERE pid = pg_backend_pid()"
        )
        backend = text("SELECT pg_backend_pid()")
        assert [tuple(row) for row in db.commit_alone(own)] == [(True, "off")]
        assert db.commit_alone(Prepared(own)) == [(True, "off")]  # on the driver's cursor
        (alone,) = db.commit_alone(backend)[0]
        db.create_tables([ProcessedEvent])
        # The same pooled connection, given back: a transaction on it is one again (BEGIN
        # came first), and a failure undoes all of it.
        with pytest.raises(RuntimeError), db.write_core(durable=False) as transaction:
            assert transaction.execute(backend).scalar_one() == alone
            assert tuple(transaction.execute(own).one()) == (False, "off")
            inbox.record_new(transaction, [("a", "orders")])
            inbox.record_new(transaction, [("b", "orders")])
            raise RuntimeError("the second statement's caller failed")
        assert _inbox_ids(db) == []
    finally:
        db.dispose()


@pytest.mark.postgres
def test_on_postgres_a_connection_lost_under_a_statement_alone_is_transient_and_replaced(
    postgres_database: str,
) -> None:
    db = Database(postgres_database)
    try:
        with pytest.raises(DBAPIError) as caught:
            db.commit_alone(text("SELECT pg_terminate_backend(pg_backend_pid())"))
        assert is_transient(caught.value)
        assert db.commit_alone(text("SELECT 1")) == [(1,)]  # a new connection, in autocommit
        with pytest.raises(DBAPIError) as caught:  # the same through the driver's cursor
            db.commit_alone(Prepared(text("SELECT pg_terminate_backend(pg_backend_pid())")))
        assert is_transient(caught.value)
        assert db.commit_alone(Prepared(text("SELECT 1"))) == [(1,)]
    finally:
        db.dispose()
