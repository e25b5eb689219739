"""One SQLite writer at a time: among the threads of a process, and among the processes that
share the database file (an api and a worker process, services.common.runtime.roles).

SQLite itself lets one writer in at a time, but a writer that finds the file locked sleeps
in SQLite's busy handler, in steps of up to 100 ms, however soon the file is free. Writers
that take a `WriterLock` queue instead on a Python lock (within the process), then on
three files next to the database (across processes), and go in at once, in turn:

- `<db>.write-gate` (`flock`): one process at a time waits for the lock. A process that has
  just let go passes the gate again, behind the one already waiting, so it cannot take the
  lock back ahead of it. Without the gate the api process's group commit, always ready
  with its next group, took the lock back again and again while the worker's consumer
  waited, tens of milliseconds at times (docs/performance.md, window 16). Processes
  waiting for the gate itself try it every 0.25 ms at most, in no set order.
- `<db>.write-lock` (`flock`): the lock itself.
- `<db>.write-turn` (a FIFO): a writer that lets go writes a byte to it, and the process at
  the gate, waiting in `poll` until then, tries the lock again at once; it also tries
  every 10 ms, for a holder that died or did not say.

Every wait has a limit (`WriteLockTimeout`): a process stopped or stuck while it holds the
lock, or the gate, holds up every writer until then. The kernel frees the locks of a
process that dies. Where the gate or the FIFO cannot be made (or the processes run as
users who cannot open each other's), writers try the lock itself in steps of up to 1 ms,
as they did before. SQLite's own lock still orders every writer, those that bypass the
lock files included (a migration, the `sqlite3` shell): the files only make the wait short
and fair.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import os
import select
import stat
import threading
import time
from pathlib import Path
from typing import IO, BinaryIO

log = logging.getLogger(__name__)

#: How long a writer waits for the lock before giving up: SQLite's busy_timeout (kinds).
WAIT_LIMIT_S = 30.0
#: The pauses between tries while another process holds the lock file, then 1 ms each
#: (where there is no gate or no FIFO).
_PAUSES_S = (0.0001, 0.0002, 0.0005, 0.001)
#: The pauses between tries at the gate, then 0.25 ms each: the process at the gate lets
#: it go as soon as it has the lock, and a process that waits behind it must take the
#: gate before that holder's write (a millisecond or more) ends and it comes back.
_GATE_PAUSES_S = (0.00005, 0.0001, 0.0002, 0.00025)
#: The longest the process at the gate waits for a byte on the FIFO before trying again.
_LONGEST_TURN_WAIT_S = 0.01


class WriteLockTimeout(TimeoutError):
    """The write lock stayed held by another writer for the whole wait (a transient error:
    the write is tried again, as when SQLite's busy_timeout runs out)."""


class NestedWrite(RuntimeError):
    """A write transaction began inside another one on the same database, in one thread:
    it would wait for itself forever."""


class WriterLock:
    """Held around each write transaction on one SQLite file (Database.write, write_core)."""

    def __init__(self, database_path: Path, wait_limit_s: float = WAIT_LIMIT_S) -> None:
        self.path = Path(f"{database_path}.write-lock")
        self.wait_limit_s = wait_limit_s
        self._threads = threading.Lock()
        self._owner: int | None = None
        self._file = _open(self.path)
        self._gate = _open(Path(f"{database_path}.write-gate")) if self._file else None
        self._turns = _Turns.open(Path(f"{database_path}.write-turn")) if self._gate else None

    def __enter__(self) -> None:
        if self._owner == threading.get_ident():
            raise NestedWrite(f"a write transaction began inside another one on {self.path.stem}")
        if not self._threads.acquire(timeout=self.wait_limit_s):
            raise WriteLockTimeout(self._held_too_long("another thread of this process"))
        try:
            if self._file is not None:
                self._lock_files(self._file)
        except BaseException:
            self._threads.release()
            raise
        self._owner = threading.get_ident()

    def __exit__(self, *_: object) -> None:
        self._owner = None
        try:
            if self._file is not None:
                fcntl.flock(self._file, fcntl.LOCK_UN)
                if self._turns is not None:
                    self._turns.announce()
        finally:
            self._threads.release()

    def close(self) -> None:
        """Let go of the files (Database.dispose); later writes queue in-process only. A
        writer of this process still in its wait or its write is let finish first."""
        waited = self._threads.acquire(timeout=self.wait_limit_s)
        try:
            for file in (self._file, self._gate, self._turns):
                if file is not None:
                    file.close()
            self._file = self._gate = self._turns = None
        finally:
            if waited:
                self._threads.release()

    def _lock_files(self, file: IO[str]) -> None:
        """Pass the gate, take the lock, let the gate go (see the module docstring)."""
        deadline = time.monotonic() + self.wait_limit_s
        if self._gate is None:
            if not _take(file, deadline):
                raise WriteLockTimeout(self._held_too_long("another process"))
            return
        if not _take(self._gate, deadline, _GATE_PAUSES_S):
            raise WriteLockTimeout(self._held_too_long("another process"))
        try:
            taken = self._turns.take(file, deadline) if self._turns else _take(file, deadline)
        finally:
            fcntl.flock(self._gate, fcntl.LOCK_UN)
        if not taken:
            raise WriteLockTimeout(self._held_too_long("another process"))

    def _held_too_long(self, holder: str) -> str:
        return (
            f"{holder} has held the write lock of {self.path.stem} (or its gate) for "
            f"{self.wait_limit_s:g} s ({self.path}): is a process stopped or stuck in a "
            "transaction?"
        )


class _Turns:
    """The FIFO `<db>.write-turn`: a byte written to it says the lock was let go."""

    def __init__(self, fifo: BinaryIO) -> None:
        self._fifo = fifo  # unbuffered; closed with this object
        self._fd = fifo.fileno()
        self._poll = select.poll()  # not select.select: that refuses descriptors over 1023
        self._poll.register(self._fd, select.POLLIN)

    @classmethod
    def open(cls, path: Path) -> _Turns | None:
        """The FIFO, made if missing; None if it can be neither made nor opened."""
        try:
            os.mkfifo(path)
        except FileExistsError:
            pass
        except OSError as exc:
            log.warning("no write turn FIFO (%s): writers wait for the lock in steps", exc)
            return None
        try:
            # Read and write: opening never blocks, and a write always has a reader.
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            log.warning("no write turn FIFO (%s): writers wait for the lock in steps", exc)
            return None
        fifo = open(fd, "r+b", buffering=0)  # noqa: SIM115 (kept open for the lock's life)
        if not stat.S_ISFIFO(os.fstat(fd).st_mode):
            fifo.close()
            log.warning("%s is not a FIFO: writers wait for the lock in steps", path)
            return None
        return cls(fifo)

    def announce(self) -> None:
        """Say the lock was let go (a full FIFO already says so: nobody drained it)."""
        try:
            os.write(self._fd, b"\0")
        except OSError:
            pass

    def take(self, file: IO[str], deadline: float) -> bool:
        """Take `file`'s lock, trying again at each announcement (and every 10 ms); False
        once `deadline` (time.monotonic()) passes."""
        self._drain()  # announcements from before this wait
        while True:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            # A byte written after the try above is in the FIFO now: no wake-up is lost.
            self._poll.poll(1000 * min(remaining, _LONGEST_TURN_WAIT_S))
            self._drain()

    def close(self) -> None:
        self._fifo.close()

    def _drain(self) -> None:
        try:
            while os.read(self._fd, 65536):
                pass
        except BlockingIOError:
            pass


def _take(file: IO[str], deadline: float, pauses: tuple[float, ...] = _PAUSES_S) -> bool:
    """Take `file`'s lock, trying again after each of `pauses` (then after the last, each
    time); False once `deadline` (time.monotonic()) passes."""
    for attempt in itertools.count():
        try:
            fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(pauses[min(attempt, len(pauses) - 1)])
    raise AssertionError("unreachable")


def _open(path: Path) -> IO[str] | None:
    """A lock file (the lock, the gate), created if missing; None if it can be neither
    created nor read. Without the lock file writers queue in-process only (and on SQLite's
    busy handler across processes); without the gate they take the lock in steps."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a")  # noqa: SIM115 (kept open for the process's life)
    except OSError:
        try:
            return open(path)  # noqa: SIM115 (flock works on a file opened for reading)
        except OSError as exc:
            log.warning("no lock file (%s): writers of other processes may wait longer", exc)
            return None
