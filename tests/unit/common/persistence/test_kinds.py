"""One class per database kind: chosen from the URL, each with its own engines and upserts."""

from __future__ import annotations

import subprocess
import sys
import threading
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
    WriterLock,
    kind_of,
    kind_of_url,
)

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


def test_sqlite_writers_in_two_processes_take_turns_on_the_lock_file(tmp_path: Path) -> None:
    """An api and a worker process share one SQLite file: the one that waits is let in when
    the other lets go (the kernel's flock), not after SQLite's busy handler's next sleep."""
    lock_path = tmp_path / "order.db.write-lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; "
            "from services.common.persistence.kinds import WriterLock\n"
            f"with WriterLock(Path({str(lock_path)!r})):\n"
            "    print('held', flush=True); sys.stdin.readline()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        entered = threading.Event()

        def write() -> None:
            with WriterLock(lock_path):
                entered.set()

        waiter = threading.Thread(target=write, daemon=True)
        waiter.start()
        assert not entered.wait(0.3), "the lock file let a second writer in"
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert entered.wait(10), "the writer was not let in once the other process let go"
        waiter.join(10)
    finally:
        holder.kill()
        holder.wait()


def test_a_writer_that_dies_holding_the_lock_file_frees_it(tmp_path: Path) -> None:
    lock_path = tmp_path / "order.db.write-lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from pathlib import Path; "
            "from services.common.persistence.kinds import WriterLock\n"
            f"WriterLock(Path({str(lock_path)!r})).__enter__(); print('held', flush=True); "
            "time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    done = threading.Event()

    def write() -> None:
        with WriterLock(lock_path):
            done.set()

    threading.Thread(target=write, daemon=True).start()
    assert done.wait(10), "a killed writer's lock was not freed"


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
