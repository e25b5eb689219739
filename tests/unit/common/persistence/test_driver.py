"""Statements on the driver's cursor: rows come back, and every driver error arrives as
SQLAlchemy's, read by `is_transient` as any other (a poison row is not the database's
trouble; a lock held too long and a lost connection are), a lost connection invalidated."""

from __future__ import annotations

import sqlite3
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from services.common.messaging import inbox
from services.common.messaging.inbox import ProcessedEvent
from services.common.persistence import driver
from services.common.persistence.bulk import sqlite_time
from services.common.persistence.db import Database, is_transient
from services.common.persistence.kinds import SqliteKind

pytestmark = pytest.mark.unit


MOMENT = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)


def placeholder(db: Database) -> str:
    return "?" if db.is_sqlite else "%s"


def moment(db: Database) -> Any:
    """MOMENT as the driver takes it for a DATETIME column."""
    return sqlite_time(MOMENT) if db.is_sqlite else MOMENT


def test_rows_come_back_and_a_statement_without_rows_returns_nothing(store_url: str) -> None:
    db = Database(store_url)
    db.create_tables([ProcessedEvent])
    p = placeholder(db)
    insert = f"INSERT INTO inbox (event_id, topic, processed_at) VALUES ({p}, {p}, {p})"
    with db.write() as session:
        connection = session.connection()
        rows = [("a", "orders", moment(db)), ("b", "orders", moment(db))]
        assert driver.run(connection, insert, rows, many=True) == []
        query = f"SELECT event_id FROM inbox WHERE topic = {p} ORDER BY event_id"
        found = driver.run(connection, query, ("orders",))
    assert [tuple(row) for row in found] == [("a",), ("b",)]


def test_a_row_the_table_refuses_is_an_integrity_error_not_the_database_s_trouble(
    store_url: str,
) -> None:
    db = Database(store_url)
    db.create_tables([ProcessedEvent])
    p = placeholder(db)
    insert = f"INSERT INTO inbox (event_id, topic, processed_at) VALUES ({p}, {p}, {p})"
    with pytest.raises(IntegrityError) as caught, db.write() as session:
        driver.run(session.connection(), insert, ("a", None, moment(db)))  # topic is NOT NULL
    assert isinstance(caught.value.orig, session.get_bind().dialect.loaded_dbapi.Error)
    assert not caught.value.connection_invalidated
    assert not is_transient(caught.value)
    with db.read() as session:  # the transaction was rolled back
        assert session.execute(text("SELECT count(*) FROM inbox")).scalar() == 0


@pytest.mark.parametrize("core", [False, True], ids=["orm-write", "core-write"])
def test_a_write_lock_held_too_long_is_transient(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, core: bool
) -> None:
    """BEGIN IMMEDIATE runs on the driver too: "database is locked" must still read as the
    database's trouble (retried), never as an event's (dead-lettered)."""
    url = f"sqlite:///{tmp_path}/locked.db"
    monkeypatch.setattr(
        "services.common.persistence.kinds.SQLITE_PRAGMAS",
        ["PRAGMA journal_mode=WAL", "PRAGMA busy_timeout=50"],
    )
    db = Database(url)
    db.create_tables([ProcessedEvent])
    assert isinstance(db.kind, SqliteKind)
    holder = sqlite3.connect(tmp_path / "locked.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process's writer, past the writers' lock
    try:
        with pytest.raises(OperationalError, match="locked") as caught:
            with db.write_core() if core else db.write() as session:
                session.connection()  # BEGIN IMMEDIATE (write_core's: on entering)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert is_transient(caught.value)


@pytest.mark.postgres
@pytest.mark.parametrize("core", [False, True], ids=["orm-write", "core-write"])
def test_a_lost_connection_is_invalidated_and_transient(postgres_database: str, core: bool) -> None:
    db = Database(postgres_database)
    with pytest.raises(OperationalError) as caught:
        with db.write_core() if core else db.write() as session:
            driver.run(session.connection(), "SELECT pg_terminate_backend(pg_backend_pid())")
    assert caught.value.connection_invalidated
    assert is_transient(caught.value)
    with (
        db.write_core() if core else db.write() as session
    ):  # the pool hands out a working connection next
        assert driver.run(session.connection(), "SELECT 1") == [(1,)]


@pytest.mark.postgres
def test_after_every_backend_dies_one_write_fails_and_the_next_ones_work(
    postgres_database: str,
) -> None:
    """A failover: every pooled connection is dead. The first write to find out fails
    (transient: retried), and the pool then replaces every connection it made before."""
    db = Database(postgres_database, pool_size=4)
    db.create_tables([ProcessedEvent])
    with ExitStack() as held:  # four pooled connections, each used just now (no idle ping)
        for _ in range(4):
            held.enter_context(db.write()).execute(text("SELECT 1"))
    killer = Database(postgres_database)
    with killer.write() as session:
        session.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        )
    killer.dispose()
    failures = []
    for i in range(6):
        try:
            with db.write() as session:
                inbox.record_new(session, [(f"e{i}", "orders")])
        except DBAPIError as exc:
            failures.append(exc)
    assert len(failures) == 1, failures
    assert failures[0].connection_invalidated and is_transient(failures[0])
    db.dispose()
