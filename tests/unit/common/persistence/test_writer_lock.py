"""SQLite writers queue on a Python lock and lock files (writer_lock): across processes, a
waiting writer goes in when the holder lets go or dies, ahead of the holder taking the lock
back; a wait has a limit; a write begun inside another in one thread is refused instead of
waiting for itself."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from services.common.persistence import writer_lock
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


def _go_on(holder: subprocess.Popen[str]) -> None:
    """Let the holder run the rest of its script (`then`)."""
    assert holder.stdin is not None
    holder.stdin.write("\n")
    holder.stdin.flush()


def _writer_in_thread(lock: WriterLock) -> threading.Event:
    entered = threading.Event()

    def write() -> None:
        with lock:
            entered.set()

    threading.Thread(target=write, daemon=True).start()
    return entered


def _is_locked(path: Path) -> bool:
    """Whether another open file holds `path`'s flock now."""
    with open(path) as probe:
        try:
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(probe, fcntl.LOCK_UN)
        return False


def _wait_until_locked(path: Path) -> None:
    deadline = time.monotonic() + 10
    while not _is_locked(path):
        assert time.monotonic() < deadline, f"nobody took {path.name}"
        time.sleep(0.01)


@pytest.mark.parametrize(
    "without",
    [
        None,
        "order.db.write-turn",  # a regular file, not a FIFO: the lock is tried in steps
        "order.db.write-gate",  # a directory, not a file: no gate, the lock tried in steps
    ],
)
def test_a_writer_waits_for_another_process_and_goes_in_when_it_lets_go(
    tmp_path: Path, without: str | None
) -> None:
    if without == "order.db.write-turn":
        (tmp_path / without).write_text("")
    elif without is not None:
        (tmp_path / without).mkdir()
    holder = _holder(tmp_path / "order.db", "sys.stdin.readline(); lock.__exit__()")
    assert holder.stdin is not None
    try:
        entered = _writer_in_thread(WriterLock(tmp_path / "order.db"))
        assert not entered.wait(0.3), "the lock file let a second writer in"
        _go_on(holder)
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


def test_a_process_that_lets_go_does_not_take_the_lock_back_ahead_of_one_waiting(
    tmp_path: Path,
) -> None:
    # The holder lets go and at once asks again, as a busy group commit does; this process
    # has waited meanwhile, so it goes first, and the holder's turn comes after it.
    holder = _holder(
        tmp_path / "order.db",
        "sys.stdin.readline(); lock.__exit__(); lock.__enter__();"
        " print(time.time(), flush=True); time.sleep(60)",
    )
    assert holder.stdin is not None and holder.stdout is not None
    lock = WriterLock(tmp_path / "order.db")
    entered_at: list[float] = []

    def write() -> None:
        with lock:
            entered_at.append(time.time())
            time.sleep(0.3)

    waiter = threading.Thread(target=write, daemon=True)
    try:
        waiter.start()
        _wait_until_locked(tmp_path / "order.db.write-gate")  # the waiter is at the gate
        assert not entered_at, "the lock file let a second writer in"
        _go_on(holder)
        holder_again_at = float(holder.stdout.readline())
        waiter.join(10)
        assert entered_at, "the waiting writer never went in"
        assert entered_at[0] < holder_again_at, "the holder took the lock back first"
        assert holder_again_at - entered_at[0] >= 0.25, "the holder went in during the turn"
    finally:
        holder.kill()
        holder.wait()


def test_a_wait_that_ends_in_an_error_leaves_the_gate_to_the_next_writer(tmp_path: Path) -> None:
    holder = _holder(tmp_path / "order.db", "sys.stdin.readline(); lock.__exit__(); time.sleep(60)")
    assert holder.stdin is not None
    try:
        lock = WriterLock(tmp_path / "order.db", wait_limit_s=0.2)
        with pytest.raises(WriteLockTimeout, match="has held the write lock"):
            lock.__enter__()
        assert not _is_locked(tmp_path / "order.db.write-gate"), "the failed wait kept the gate"
        _go_on(holder)
        lock.wait_limit_s = 10
        with lock:  # the same lock, once the holder let go
            pass
    finally:
        holder.kill()
        holder.wait()


def test_the_process_at_the_gate_is_woken_when_the_holder_lets_go(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its own tries, every 10 ms, put off for a minute: only the FIFO's byte can let it in.
    monkeypatch.setattr(writer_lock, "_LONGEST_TURN_WAIT_S", 60.0)
    holder = _holder(tmp_path / "order.db", "sys.stdin.readline(); lock.__exit__(); time.sleep(60)")
    assert holder.stdin is not None
    try:
        entered = _writer_in_thread(WriterLock(tmp_path / "order.db"))
        _wait_until_locked(tmp_path / "order.db.write-gate")
        _go_on(holder)
        assert entered.wait(10), "the writer at the gate was not woken by the holder letting go"
    finally:
        holder.kill()
        holder.wait()


def test_closing_waits_for_a_write_in_progress_then_writes_queue_in_the_process(
    tmp_path: Path,
) -> None:
    lock = WriterLock(tmp_path / "order.db")
    writing, done = threading.Event(), threading.Event()

    def write() -> None:
        with lock:
            writing.set()
            time.sleep(0.3)
        done.set()

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    assert writing.wait(10)
    lock.close()  # not under the writer: it waits for the write to end
    assert done.is_set(), "the lock's files were closed under a write in progress"
    writer.join(10)
    with lock:  # later writes queue in the process only
        assert not _writer_in_thread(lock).wait(0.2), "two writers of one process at once"


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
