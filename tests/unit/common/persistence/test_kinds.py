"""One class per database kind: chosen from the URL, each with its own engines and upserts."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, text
from sqlalchemy.dialects import postgresql, sqlite

from services.common.persistence.db import Database
from services.common.persistence.kinds import (
    POSTGRES,
    SQLITE,
    DatabaseKind,
    PostgresKind,
    SqliteKind,
    kind_of,
    kind_of_url,
    sqlite_connection,
    sqlite_file,
)
from services.common.persistence.writer_lock import WriterLock

pytestmark = pytest.mark.unit

_TABLE = Table("seen", MetaData(), Column("id", Integer, primary_key=True))
_PG_URL = "postgresql+psycopg://paysaga@127.0.0.1:1/paysaga_order"


def test_the_kind_is_chosen_from_the_url_or_the_dialect() -> None:
    assert kind_of_url("sqlite:///var/order.db") is SQLITE
    assert kind_of_url(_PG_URL) is POSTGRES
    assert kind_of("sqlite") is SQLITE and kind_of("postgresql") is POSTGRES
    assert isinstance(SQLITE, SqliteKind) and isinstance(POSTGRES, PostgresKind)


@pytest.mark.parametrize(("kind", "dialect"), [(SQLITE, sqlite), (POSTGRES, postgresql)])
def test_each_kind_ignores_conflicts_in_its_own_dialect(kind: DatabaseKind, dialect: Any) -> None:
    statement = kind.insert_ignoring(_TABLE, ["id"])
    sql = str(statement.compile(dialect=dialect.dialect()))
    assert sql.startswith("INSERT INTO seen (id) VALUES")
    assert sql.endswith("ON CONFLICT (id) DO NOTHING")


def test_sqlite_reads_on_their_own_engine_and_writers_queue_on_a_lock(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/nested/order.db", pool_size=3)
    try:
        assert db.is_sqlite and db._reader is not db._writer
        assert isinstance(db._write_lock, WriterLock), "writers take turns, in and across processes"
        with db.read() as session:
            assert session.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            assert session.execute(text("PRAGMA synchronous")).scalar() == 2  # FULL
            assert session.execute(text("PRAGMA foreign_keys")).scalar() == 1
        with db.write() as session:
            session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        db.ping()
    finally:
        db.dispose()


@pytest.mark.parametrize(
    ("url", "file"),
    [
        ("sqlite:///var/order.db", os.path.abspath("var/order.db")),
        ("sqlite:////srv/paysaga/order.db", "/srv/paysaga/order.db"),
        ("sqlite://", None),
        ("sqlite:///:memory:", None),
        ("sqlite:///file:var/order.db?uri=true", os.path.abspath("var/order.db")),
        ("sqlite:///file:var/order.db?mode=rwc&uri=1", os.path.abspath("var/order.db")),
        ("sqlite:///file:/srv/my%20data/order.db?uri=True", "/srv/my data/order.db"),
        ("sqlite:///file:///srv/order.db?uri=true", "/srv/order.db"),
        ("sqlite:///file::memory:?cache=shared&uri=true", None),
        ("sqlite:///file:order?mode=memory&uri=true", None),
        ("sqlite:///file:order.db?vfs=memdb&uri=true", None),
        # Without uri the driver opens a file of that very name.
        ("sqlite:///file:order.db", os.path.abspath("file:order.db")),
    ],
)
def test_the_file_of_a_sqlite_url_is_the_one_its_driver_opens(url: str, file: str | None) -> None:
    assert sqlite_file(url) == file


def test_a_sqlite_uri_filename_gets_the_lock_shared_across_processes(tmp_path: Path) -> None:
    lock = SQLITE.write_lock(f"sqlite:///file:{tmp_path}/order.db?uri=true")
    assert isinstance(lock, WriterLock), "processes sharing a URI-named file take turns too"
    assert lock.path == tmp_path / "order.db.write-lock"
    lock.close()
    assert not isinstance(SQLITE.write_lock("sqlite:///file:x?mode=memory&uri=true"), WriterLock)


def test_a_plain_connection_opens_the_engines_file_with_their_settings(tmp_path: Path) -> None:
    url = f"sqlite:///file:{tmp_path}/order.db?uri=1"
    db = Database(url)
    try:
        with db.write() as session:
            session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            session.execute(text("INSERT INTO t VALUES (7)"))
        connection = sqlite_connection(url)
        try:
            assert connection.execute("SELECT id FROM t").fetchall() == [(7,)]
            assert connection.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL
        finally:
            connection.close()
        assert sorted(p.name for p in tmp_path.glob("*.db")) == ["order.db"]
    finally:
        db.dispose()


def test_postgres_shares_one_pool_sized_by_the_setting() -> None:
    db = Database(_PG_URL, pool_size=7)  # nothing connects until a session is used
    try:
        assert not db.is_sqlite and db._reader is db._writer
        pool = db._writer.pool
        assert pool.size() == 7 and pool._max_overflow == 7  # type: ignore[attr-defined]
        # Not a ping per checkout: only a connection idle for a while is pinged
        # (kinds.ping_when_idle, test_idle_ping).
        assert not pool._pre_ping  # type: ignore[attr-defined]
        with db._write_lock:
            pass  # no lock in the process: the database orders the writers
    finally:
        db.dispose()
