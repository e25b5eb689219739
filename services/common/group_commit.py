"""Group commit: many concurrent small writes (one per RPC) share one transaction and one fsync.

RPC threads hand their write to `GroupCommitter.submit` and wait; one writer thread takes
every write queued so far, applies them in order in one transaction and commits. A write
that raises one of the `rejects` exceptions (a domain error such as an unknown product)
fails alone: the transaction is rolled back and the group applied once more, each write
in a savepoint, without it. Any other error fails the whole group. A caller is answered
only after its write committed, so what it is told is durable.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlmodel import Session

from services.common.db import Database

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Rejected(Exception):
    """A write of the group was rejected: roll back and apply the group again without it."""


class _Pending(Generic[T]):
    def __init__(self, work: Callable[[Session], T]) -> None:
        self.work = work
        self.result: T | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()


class GroupCommitter:
    """Applies submitted writes in groups, one transaction per group, on its own thread."""

    def __init__(
        self, db: Database, *, rejects: tuple[type[Exception], ...], max_group: int = 256
    ) -> None:
        self.db = db
        self.rejects = rejects
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Pending[Any]] = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Apply what is queued, then stop."""
        self._stopping.set()
        self._thread.join(timeout_s)

    def submit(self, work: Callable[[Session], T]) -> T:
        """Apply `work(session)` in the next group; return its result once committed."""
        if self._stopping.is_set():
            raise RuntimeError("shutting down: no new writes are taken")
        pending = _Pending(work)
        self._queue.put(pending)
        pending.done.wait()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            try:
                group = [self._queue.get(timeout=0.2)]
            except queue.Empty:
                continue
            while len(group) < self.max_group:
                try:
                    group.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._apply(group)

    def _apply(self, group: list[_Pending[Any]]) -> None:
        try:
            if not self._try_apply(group, savepoints=False):
                self._try_apply(group, savepoints=True)
        except Exception as exc:
            log.exception("group write failed", extra={"writes": len(group)})
            for pending in group:
                if pending.error is None:
                    pending.error = exc
        for pending in group:
            pending.done.set()

    def _try_apply(self, group: list[_Pending[Any]], *, savepoints: bool) -> bool:
        """One attempt at the group; False when a write was rejected (and marked) on the way.

        Without savepoints (the fast path), a rejection rolls the attempt back; with
        them (the second attempt), only the rejected write is rolled back.
        """
        try:
            with self.db.write() as session:
                for pending in group:
                    if pending.error is None:
                        self._apply_one(session, pending, savepoints)
        except _Rejected:
            return False
        return True

    def _apply_one(self, session: Session, pending: _Pending[Any], savepoint: bool) -> None:
        try:
            if savepoint:
                with session.begin_nested():
                    pending.result = pending.work(session)
            else:
                pending.result = pending.work(session)
        except self.rejects as exc:
            pending.error = exc
            if not savepoint:
                raise _Rejected from exc
