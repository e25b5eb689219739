"""The worker's WAL checkpoints: the log goes into the database file without a commit doing it."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest
from sqlalchemy import text

from services.common.persistence.checkpoints import WalCheckpointer
from services.common.persistence.db import Database

pytestmark = pytest.mark.unit


def _pages_in_file(path: Path) -> int:
    return path.stat().st_size // 4096


def _database(path: Path, rows: int, blob: int = 1000) -> Database:
    db = Database(f"sqlite:///{path}")
    with db.write() as session:
        session.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)"))
    with db.write() as session:
        session.execute(
            text(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :rows) "
                "INSERT INTO t SELECT i, zeroblob(:blob) FROM n"
            ),
            {"rows": rows, "blob": blob},
        )
    return db


def test_the_checkpointer_copies_the_log_into_the_file(tmp_path: Path) -> None:
    path = tmp_path / "order.db"
    db = _database(path, rows=200)  # about 50 pages: under the 1,000 a commit checkpoints at
    checkpointer = WalCheckpointer(f"sqlite:///{path}")
    try:
        before = _pages_in_file(path)
        assert checkpointer.checkpoint() == 0, "the next checkpoint waits for the interval"
        assert _pages_in_file(path) >= before + 40, "the rows' pages are in the file now"
        with db.read() as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar() == 200
    finally:
        checkpointer.stop()
        db.dispose()


def test_it_waits_for_no_reader_and_the_reader_keeps_its_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "order.db"
    db = _database(path, rows=1)
    checkpointer = WalCheckpointer(f"sqlite:///{path}")
    reader = sqlite3.connect(path, isolation_level=None)
    try:
        reader.execute("BEGIN")
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,)
        with db.write() as session:
            session.execute(text("INSERT INTO t VALUES (2, zeroblob(10))"))
        began = time.monotonic()
        checkpointer.checkpoint()  # passive: copies what the reader no longer needs, at once
        assert time.monotonic() - began < 1.0, "it did not wait for the reader"
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (1,), "its snapshot holds"
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (2,)
        with db.write() as session:  # writers go on meanwhile
            session.execute(text("INSERT INTO t VALUES (3, zeroblob(10))"))
    finally:
        reader.close()
        checkpointer.stop()
        db.dispose()


def test_stopping_interrupts_a_long_checkpoint_and_the_thread_closes_its_connection(
    tmp_path: Path,
) -> None:
    path = tmp_path / "order.db"
    writer = sqlite3.connect(path, isolation_level=None)  # kept open: its close checkpoints
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")  # the log keeps all of it: about 80 MB
    writer.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body BLOB)")
    writer.execute(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 40000) "
        "INSERT INTO t SELECT i, randomblob(2000) FROM n"
    )
    checkpointer = WalCheckpointer(f"sqlite:///{path}", interval_s=0.0)
    try:
        checkpointer.start()
        time.sleep(0.05)  # its first checkpoint is copying by now
        checkpointer.stop(timeout_s=0.01)  # what a shutdown short of time gives it
        checkpointer._thread.join(10)
        assert not checkpointer.is_alive(), "interrupted, the thread ended"
        assert checkpointer._connection is None, "and closed its connection itself"
        assert writer.execute("SELECT count(*) FROM t").fetchone() == (40000,)
    finally:
        writer.close()


def test_a_checkpoint_that_fails_is_reported_and_retried_on_a_new_connection(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    missing = tmp_path / "gone" / "order.db"  # its directory does not exist: cannot open
    checkpointer = WalCheckpointer(f"sqlite:///{missing}")
    assert checkpointer.checkpoint() == 0
    assert checkpointer.checkpoint() == 0
    warnings = [r for r in caplog.records if "WAL checkpoint failed" in r.getMessage()]
    assert len(warnings) == 1, "reported once a minute, not at every round"
    assert checkpointer._connection is None
    missing.parent.mkdir()
    _database(missing, rows=1).dispose()
    checkpointer.checkpoint()
    assert checkpointer._connection is not None, "the next round opened a new connection"
    checkpointer.stop()
