"""One SQLite writer at a time: among the threads of a process, and among the processes that
share the database file (an api and a worker process, services.common.runtime.roles).

SQLite itself lets one writer in at a time, but a writer that finds the file locked sleeps
in SQLite's busy handler, in steps of up to 100 ms, however soon the file is free. Writers
that take a `WriterLock` first queue instead on a Python lock (within the process) and on a
lock file next to the database (`flock`, across processes), and go in within about a
millisecond of the holder's commit. The kernel frees the lock file of a process that dies.
SQLite's own lock still orders every writer, those that bypass the lock file included (a
migration, the `sqlite3` shell): the lock file only makes the wait short.
"""

from __future__ import annotations

import fcntl
import itertools
import logging
import threading
import time
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

#: How long a writer waits for the lock before giving up: SQLite's busy_timeout (kinds).
WAIT_LIMIT_S = 30.0
#: The pauses between tries while another process holds the lock file, then 1 ms each.
_PAUSES_S = (0.0001, 0.0002, 0.0005, 0.001)


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

    def __enter__(self) -> None:
        if self._owner == threading.get_ident():
            raise NestedWrite(f"a write transaction began inside another one on {self.path.stem}")
        if not self._threads.acquire(timeout=self.wait_limit_s):
            raise WriteLockTimeout(self._held_too_long("another thread of this process"))
        try:
            if self._file is not None:
                self._lock_file(self._file)
        except BaseException:
            self._threads.release()
            raise
        self._owner = threading.get_ident()

    def __exit__(self, *_: object) -> None:
        self._owner = None
        try:
            if self._file is not None:
                fcntl.flock(self._file, fcntl.LOCK_UN)
        finally:
            self._threads.release()

    def close(self) -> None:
        """Let go of the lock file (Database.dispose); later writes queue in-process only."""
        if self._file is not None:
            self._file.close()
            self._file = None

    def _lock_file(self, file: IO[str]) -> None:
        deadline = time.monotonic() + self.wait_limit_s
        for attempt in itertools.count():
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise WriteLockTimeout(self._held_too_long("another process")) from None
                time.sleep(_PAUSES_S[min(attempt, len(_PAUSES_S) - 1)])

    def _held_too_long(self, holder: str) -> str:
        return (
            f"{holder} has held the write lock of {self.path.stem} for {self.wait_limit_s:g} s "
            f"({self.path}): is a process stopped or stuck in a transaction?"
        )


def _open(path: Path) -> IO[str] | None:
    """The lock file, created if missing; None (writers then queue in-process only, and on
    SQLite's busy handler across processes) if it can be neither created nor read."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return open(path, "a")  # noqa: SIM115 (kept open for the process's life)
    except OSError:
        try:
            return open(path)  # noqa: SIM115 (flock works on a file opened for reading)
        except OSError as exc:
            log.warning("no write lock file (%s): writers of other processes may wait longer", exc)
            return None
