"""The worker's WAL checkpoints: the log goes into the database file without a commit doing it."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import text

from services.common.persistence.checkpoints import WalCheckpointer
from services.common.persistence.db import Database

pytestmark = pytest.mark.unit


def _pages_in_file(path: Path) -> int:
    return path.stat().st_size // 4096


def test_the_checkpointer_copies_the_log_into_the_file(tmp_path: Path) -> None:
    path = tmp_path / "order.db"
    db = Database(f"sqlite:///{path}")
    checkpointer = WalCheckpointer(str(path))
    try:
        with db.write() as session:
            session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)"))
        with db.write() as session:  # about 50 pages: under the 1,000 a commit checkpoints at
            for i in range(200):
                session.execute(text("INSERT INTO t VALUES (:i, zeroblob(1000))"), {"i": i})
        before = _pages_in_file(path)
        assert checkpointer.checkpoint() == 0, "the next checkpoint waits for the interval"
        assert _pages_in_file(path) >= before + 40, "the rows' pages are in the file now"
        with db.read() as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar() == 200
    finally:
        checkpointer.stop()
        db.dispose()


def test_a_reader_holding_an_old_snapshot_neither_blocks_it_nor_loses_its_view(
    tmp_path: Path,
) -> None:
    path = tmp_path / "order.db"
    db = Database(f"sqlite:///{path}")
    checkpointer = WalCheckpointer(str(path))
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        with db.write() as session:
            session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            session.execute(text("INSERT INTO t VALUES (1)"))
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)
        with db.write() as session:
            session.execute(text("INSERT INTO t VALUES (2)"))
        checkpointer.checkpoint()  # passive: copies what the reader no longer needs, at once
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,), "its snapshot holds"
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (2,)
    finally:
        reader.close()
        checkpointer.stop()
        db.dispose()


def test_it_runs_on_its_own_thread_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "order.db"
    db = Database(f"sqlite:///{path}")
    with db.write() as session:
        session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
    checkpointer = WalCheckpointer(str(path), interval_s=0.01)
    checkpointer.start()
    try:
        assert checkpointer.is_alive()
    finally:
        checkpointer.stop()
        db.dispose()
    assert not checkpointer.is_alive()
