"""SQLite's WAL checkpoints, taken off the commit path by a thread of the worker process.

A checkpoint copies the pages of the write-ahead log back into the database file and syncs
it. By default SQLite runs one inside the commit that brings the log past 1,000 pages
(`wal_autocheckpoint`): that commit's COMMIT returns only after the copy and the sync, so
its callers (a CreateOrder group, a consumer's batch) wait for them, and every writer of
every process waits too, queued on the writers' lock (writer_lock) that the committing
writer still holds. On this project's 2-core machine such a checkpoint took 5 ms at the
median and up to 200 ms under load.

`WalCheckpointer` runs `PRAGMA wal_checkpoint(PASSIVE)` every `interval_s` on a connection of
its own, in the one worker process of the database file (the process that runs its relay).
A passive checkpoint copies what no reader still needs, waits for no reader or writer, and
takes neither the writers' lock nor a write transaction: commits go on while it copies.
With the services' settings (`synchronous=FULL`) it syncs the log before copying and the
file before the log may be reused, so no commit's durability depends on it. Most commits
then find little or nothing left to copy; SQLite's own checkpoint at 1,000 pages stays the
backstop (no worker running, or a log that cannot start over while a reader holds an old
snapshot), so the log never grows without bound.

The connection belongs to the checkpointer's thread: opened there, closed there when the
thread ends. `stop()` interrupts a checkpoint under way (SQLite stops copying at once and
the next checkpoint resumes) instead of closing the connection under it.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time

from services.common.persistence.kinds import sqlite_connection
from services.common.worker import PeriodicWorker

log = logging.getLogger(__name__)

#: How often the worker checkpoints: at the saga's max throughput a database's log grows by
#: about 3,000 pages a second, so most checkpoints find a few hundred pages to copy.
CHECKPOINT_INTERVAL_S = 0.2

#: A checkpoint this slow is logged: the disk, not the service, is struggling.
SLOW_CHECKPOINT_S = 1.0

#: A checkpoint that fails (a full disk, a file that went away) is reported at most this
#: often; each failure closes the connection and the next round opens a new one.
FAILURE_LOG_EVERY_S = 60.0


class WalCheckpointer(PeriodicWorker):
    """Checkpoints the write-ahead log of the SQLite database at `url`, passively, every
    `interval_s`, on a thread of its own."""

    def __init__(self, url: str, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        super().__init__("wal-checkpoint", self.checkpoint, interval_s)
        self.url = url
        #: Held while the connection is made, closed or interrupted, never while it works.
        self._guard = threading.Lock()
        self._connection: sqlite3.Connection | None = None
        self._failure_logged_at = float("-inf")

    def checkpoint(self) -> int:
        """One passive checkpoint, on the calling thread; 0: the next waits for the interval."""
        try:
            connection = self._connection or self._connect()
            began = time.monotonic()
            # (busy, pages in the log, pages of it now in the file); busy when another
            # connection's checkpoint is under way: SQLite runs one at a time.
            _busy, log_pages, _copied = connection.execute(
                "PRAGMA wal_checkpoint(PASSIVE)"
            ).fetchone()
        except sqlite3.Error as exc:
            self._close()
            if not self._stopping.is_set():
                self._report(exc)
            return 0
        took = time.monotonic() - began
        if took > SLOW_CHECKPOINT_S:
            log.warning(
                "a WAL checkpoint took %.1f s (%d pages in the log): the disk is slow",
                took,
                log_pages,
                extra={"database": self.url},
            )
        return 0

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.is_alive():
            super().stop(timeout_s)
        else:  # never started: checkpoint() ran on the caller's thread, which closes it
            self._close()

    def _run(self) -> None:
        try:
            super()._run()
        finally:
            self._close()

    def _wake(self) -> None:
        """Stopping: interrupt a checkpoint under way (the thread then closes the connection)."""
        with self._guard:
            if self._connection is not None:
                self._connection.interrupt()

    def _connect(self) -> sqlite3.Connection:
        with self._guard:
            self._connection = sqlite_connection(self.url)
            return self._connection

    def _close(self) -> None:
        with self._guard:
            connection, self._connection = self._connection, None
        if connection is not None:
            connection.close()

    def _report(self, exc: sqlite3.Error) -> None:
        now = time.monotonic()
        if now - self._failure_logged_at >= FAILURE_LOG_EVERY_S:
            self._failure_logged_at = now
            log.warning(
                "a WAL checkpoint failed (%s); commits checkpoint the log themselves "
                "meanwhile, and the checkpointer tries again",
                exc,
                extra={"database": self.url},
            )
