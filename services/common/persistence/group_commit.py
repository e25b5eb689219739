"""Group commit: many concurrent small writes (one per RPC) share one transaction and one fsync.

RPCs hand a request to `GroupCommitter.submit_future` (and await the future) or to
`submit` (and wait); one writer thread takes
every request queued so far and passes them, in order, to the service's `write_group`
function inside one transaction, then commits. `write_group` answers each request with a
result or with the exception that rejects it (a domain error such as an unknown product;
a rejected request must leave no writes behind). Any other error fails the whole group.
A caller is answered only after the commit, so what it is told is durable.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, TypeVar

from sqlmodel import Session

from services.common.crashpoints import crash_point
from services.common.observability import metrics, tracing
from services.common.persistence.db import Database, is_transient
from services.common.worker import BackgroundWorker

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Result = TypeVar("Result")


class ShuttingDown(RuntimeError):
    """No new writes are taken: the service is stopping."""


class _Pending(Generic[Request, Result]):
    def __init__(self, request: Request) -> None:
        self.request = request
        self.future: Future[Result] = Future()
        #: The submitter's trace context (None: tracing off).
        self.trace = tracing.capture()


class GroupCommitter(BackgroundWorker, Generic[Request, Result]):
    """Applies submitted requests in groups, one transaction per group, on its own thread."""

    def __init__(
        self,
        db: Database,
        write_group: Callable[[Session, Sequence[Request]], Sequence[Result | Exception]],
        *,
        max_group: int = 256,
    ) -> None:
        super().__init__("group-commit")
        self.db = db
        self.write_group = write_group
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Pending[Request, Result]] = queue.SimpleQueue()

    def submit_future(self, request: Request) -> Future[Result]:
        """Apply `request` in the next group: the future holds its result once committed."""
        if self._stopping.is_set():
            raise ShuttingDown("the service is shutting down: retry the call")
        pending: _Pending[Request, Result] = _Pending(request)
        self._queue.put(pending)
        if self._stopping.is_set() and not self.is_alive():
            self._refuse_leftovers()  # put after the writer's last look at the queue
        return pending.future

    def stop(self, timeout_s: float = 10.0) -> None:
        super().stop(timeout_s)
        self._refuse_leftovers()

    def _refuse_leftovers(self) -> None:
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return
            if pending.future.set_running_or_notify_cancel():
                pending.future.set_exception(
                    ShuttingDown("the service is shutting down: retry the call")
                )

    def submit(self, request: Request) -> Result:
        """Apply `request` in the next group; return its result once committed, or raise."""
        return self.submit_future(request).result()

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
            # A caller that gave up (deadline, disconnect) cancelled its future: its request
            # is not written (a retry with its request_id is safe). The others' futures are
            # now running, so nobody can cancel them under the writer.
            group = [p for p in group if p.future.set_running_or_notify_cancel()]
            if group:
                self._apply(group)

    def _apply(self, group: list[_Pending[Request, Result]], attempts: int = 3) -> None:
        started_ns = time.time_ns()
        for attempt in range(1, attempts + 1):
            try:
                outcomes = self._write(group)
            except Exception as exc:
                if attempt < attempts and is_transient(exc):  # a deadlock, a lost connection
                    log.warning("group write failed; trying it again", exc_info=True)
                    time.sleep(0.05 * attempt)
                    continue
                log.exception("group write failed", extra={"writes": len(group)})
                outcomes = [exc] * len(group)
            break
        tracing.record_group_write(
            (
                (p.trace, repr(outcome) if isinstance(outcome, BaseException) else None)
                for p, outcome in zip(group, outcomes, strict=True)
            ),
            started_ns,
        )
        for pending, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, BaseException):
                pending.future.set_exception(outcome)
            else:
                pending.future.set_result(outcome)

    def _write(self, group: list[_Pending[Request, Result]]) -> Sequence[Result | Exception]:
        with self.db.write() as session:
            outcomes = self.write_group(session, [p.request for p in group])
            crash_point("group-commit.before-commit")
        crash_point("group-commit.after-commit")
        metrics.group_committed(len(group))
        return outcomes
