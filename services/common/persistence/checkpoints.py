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
Taken often enough, it keeps the log under the 1,000 pages at which a commit would
checkpoint itself; that default stays as the backstop for when no worker runs or it falls
behind, so the log never grows without bound.
"""

from __future__ import annotations

import logging
import sqlite3
import time

from services.common.worker import PeriodicWorker

log = logging.getLogger(__name__)

#: How often the worker checkpoints: at the saga's max throughput a database's log grows by
#: about 3,000 pages a second, so 0.2 s keeps it well under SQLite's 1,000-page backstop.
CHECKPOINT_INTERVAL_S = 0.2

#: A checkpoint this slow is logged: the disk, not the service, is struggling.
SLOW_CHECKPOINT_S = 1.0


class WalCheckpointer(PeriodicWorker):
    """Checkpoints one SQLite file's write-ahead log every `interval_s`, passively."""

    def __init__(self, database_file: str, interval_s: float = CHECKPOINT_INTERVAL_S) -> None:
        super().__init__("wal-checkpoint", self.checkpoint, interval_s)
        self.database_file = database_file
        self._connection: sqlite3.Connection | None = None

    def checkpoint(self) -> int:
        """One passive checkpoint; returns 0 so that the next one waits for the interval."""
        if self._connection is None:
            # The connection's own settings apply to the checkpoint: synchronous=FULL (the
            # default) syncs the log before copying and the file after.
            self._connection = sqlite3.connect(
                self.database_file, isolation_level=None, check_same_thread=False
            )
        began = time.monotonic()
        # (busy, pages in the log, pages of it now in the file); busy when another
        # connection's checkpoint is under way: SQLite runs one at a time.
        _busy, log_pages, _copied = self._connection.execute(
            "PRAGMA wal_checkpoint(PASSIVE)"
        ).fetchone()
        took = time.monotonic() - began
        if took > SLOW_CHECKPOINT_S:
            log.warning(
                "a WAL checkpoint took %.1f s (%d pages in the log): the disk is slow",
                took,
                log_pages,
                extra={"database": self.database_file},
            )
        return 0

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.is_alive():
            super().stop(timeout_s)
        if self._connection is not None:
            self._connection.close()
            self._connection = None
