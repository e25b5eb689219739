"""SQLite writers queue on a Python lock and a lock file (writer_lock): across processes, a
waiting writer goes in when the holder lets go or dies; a wait has a limit; a write begun
inside another in one thread is refused instead of waiting for itself."""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from services.common.persistence.writer_lock import NestedWrite, WriteLockTimeout, WriterLock

pytestmark = pytest.mark.unit


def _holder(database: Path, then: str) -> subprocess.Popen[str]:
    """Another process that takes the write lock of `database`, says "held", then runs `then`."""
    script = (
        "import sys, time; from pathlib import Path\n"
        "from services.common.persistence.writer_lock import WriterLock\n"
        f"lock = WriterLock(Path({str(database)!r})); lock.__enter__()\n"
        f"print('held', flush=True); {then}"
    )
    holder = subprocess.Popen(
        [sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "held"
    return holder


def _writer_in_thread(lock: WriterLock) -> threading.Event:
    entered = threading.Event()

    def write() -> None:
        with lock:
            entered.set()

    threading.Thread(target=write, daemon=True).start()
    return entered


def test_a_writer_waits_for_another_process_and_goes_in_when_it_lets_go(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "order.db", "sys.stdin.readline(); lock.__exit__()")
    assert holder.stdin is not None
    try:
        entered = _writer_in_thread(WriterLock(tmp_path / "order.db"))
        assert not entered.wait(0.3), "the lock file let a second writer in"
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert entered.wait(10), "the writer was not let in once the other process let go"
    finally:
        holder.kill()
        holder.wait()


def test_a_writer_that_dies_holding_the_lock_frees_it(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "order.db", "time.sleep(60)")
    holder.kill()
    holder.wait()
    assert _writer_in_thread(WriterLock(tmp_path / "order.db")).wait(10), "the lock stayed held"


def test_a_wait_for_a_stuck_process_ends_in_a_transient_error(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "order.db", "time.sleep(60)")
    try:
        lock = WriterLock(tmp_path / "order.db", wait_limit_s=0.2)
        with pytest.raises(WriteLockTimeout, match="another process has held the write lock"):
            lock.__enter__()
        assert isinstance(WriteLockTimeout("x"), TimeoutError)  # retried, as "database is locked"
        holder.kill()
        holder.wait()
        with lock:  # and the failed wait left nothing held in this process
            pass
    finally:
        holder.kill()
        holder.wait()


def test_a_write_inside_another_in_one_thread_is_refused(tmp_path: Path) -> None:
    lock = WriterLock(tmp_path / "order.db")
    with lock:
        with pytest.raises(NestedWrite, match="inside another one"):
            lock.__enter__()
    with lock:  # the refusal left the lock as it was
        pass


def test_without_a_lock_file_writers_of_the_process_still_take_turns(tmp_path: Path) -> None:
    (tmp_path / "order.db.write-lock").mkdir()  # what cannot be opened as a file
    lock = WriterLock(tmp_path / "order.db")
    with lock:
        assert not _writer_in_thread(lock).wait(0.2), "two writers of one process at once"
