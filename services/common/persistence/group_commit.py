"""Group commit: many concurrent small writes (one per RPC) share one transaction and one fsync.

RPCs on an event loop `await GroupCommitter.write(request)`; threads call `submit` (and
wait) or `submit_future`. One writer thread takes every request queued so far, begins a
transaction (on SQLite that may wait for another process's write), takes the requests
queued meanwhile too, and passes them all, in order, to the service's `write_group`
function inside that transaction, then commits. `write_group` answers each request with a
result or with the exception that rejects it (a domain error such as an unknown product; a
rejected request must leave no writes behind). Any other error fails the whole group.
A caller is answered only after the commit, so what it is told is durable. The callers of
one group awaiting on one event loop are answered in one hand-over to that loop, not one
per caller (each cost the loop a wake-up and the writer a thread-safe future).
"""

from __future__ import annotations

import asyncio
import logging
import queue
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Any, Generic, TypeVar, cast

from services.common.crashpoints import crash_point
from services.common.observability import metrics, tracing
from services.common.persistence.db import Database, is_transient
from services.common.persistence.transaction import Transaction
from services.common.worker import BackgroundWorker

log = logging.getLogger(__name__)

Request = TypeVar("Request")
Result = TypeVar("Result")


class ShuttingDown(RuntimeError):
    """No new writes are taken: the service is stopping."""


class _Pending(Generic[Request, Result]):
    """A request and how its caller is answered: a thread-safe future, or (`loop` set) a
    future of that event loop, which only that loop's thread may touch."""

    __slots__ = ("request", "loop", "future", "trace", "taken_ns")

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.request = request
        self.loop = loop
        self.future: Future[Result] | asyncio.Future[Result] = (
            Future() if loop is None else loop.create_future()
        )
        #: The submitter's trace context (None: tracing off).
        self.trace = tracing.capture()
        #: When the writer took it (time.time_ns()): where its group commit span starts.
        self.taken_ns = 0

    def take(self) -> bool:
        """On the writer's thread: False if the caller gave up (its request is not written)."""
        self.taken_ns = time.time_ns()
        future = self.future
        if isinstance(future, Future):
            return future.set_running_or_notify_cancel()
        return not future.cancelled()  # if it is cancelled later, the answer is dropped


def _answer(answers: list[tuple[asyncio.Future[Any], Any]]) -> None:
    """On the loop: settle the futures of a group's callers (those still waiting)."""
    for future, outcome in answers:
        if future.done():
            continue  # the caller gave up meanwhile
        try:
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
        except Exception as exc:  # e.g. an exception asyncio refuses: the others still hear
            future.set_exception(RuntimeError(f"the write's outcome could not be given: {exc}"))


class GroupCommitter(BackgroundWorker, Generic[Request, Result]):
    """Applies submitted requests in groups, one transaction per group, on its own thread."""

    def __init__(
        self,
        db: Database,
        write_group: Callable[[Transaction, Sequence[Request]], Sequence[Result | Exception]],
        *,
        max_group: int = 256,
    ) -> None:
        super().__init__("group-commit")
        self.db = db
        self.write_group = write_group
        self.max_group = max_group
        self._queue: queue.SimpleQueue[_Pending[Request, Result]] = queue.SimpleQueue()

    async def write(self, request: Request) -> Result:
        """Apply `request` in the next group; return its result once committed, or raise.

        A caller cancelled before its group is taken is not written (a retry with the same
        request is then safe); one cancelled later may be, and is not told.
        """
        pending: _Pending[Request, Result] = _Pending(request, asyncio.get_running_loop())
        self._enqueue(pending)
        return await cast("asyncio.Future[Result]", pending.future)

    def submit_future(self, request: Request) -> Future[Result]:
        """Apply `request` in the next group: the future holds its result once committed."""
        pending: _Pending[Request, Result] = _Pending(request)
        self._enqueue(pending)
        return pending.future  # type: ignore[return-value]

    def _enqueue(self, pending: _Pending[Request, Result]) -> None:
        if self._stopping.is_set():
            raise ShuttingDown("the service is shutting down: retry the call")
        self._queue.put(pending)
        if self._stopping.is_set() and not self.is_alive():
            self._refuse_leftovers()  # put after the writer's last look at the queue

    def stop(self, timeout_s: float = 10.0) -> None:
        super().stop(timeout_s)
        self._refuse_leftovers()

    def _refuse_leftovers(self) -> None:
        while True:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return
            if pending.take():
                refused = ShuttingDown("the service is shutting down: retry the call")
                self._settle([(pending, refused)])

    def submit(self, request: Request) -> Result:
        """Apply `request` in the next group; return its result once committed, or raise."""
        return self.submit_future(request).result()  # type: ignore[return-value]

    def _run(self) -> None:
        while not (self._stopping.is_set() and self._queue.empty()):
            try:
                first = self._queue.get(timeout=0.2)
            except queue.Empty:
                continue
            # A caller that gave up (deadline, disconnect) cancelled its future: its request
            # is not written (a retry with its request_id is safe). From here a thread's
            # future can no longer be cancelled; a loop's caller that gives up now may be
            # written, and is not told (see write).
            group = [first] if first.take() else []
            self._gather(group)
            if group:
                self._apply(group)

    def _gather(self, group: list[_Pending[Request, Result]]) -> None:
        """Add the requests queued meanwhile to `group` (those whose callers still wait),
        up to max_group."""
        while len(group) < self.max_group:
            try:
                pending = self._queue.get_nowait()
            except queue.Empty:
                return
            if pending.take():
                group.append(pending)

    def _apply(self, group: list[_Pending[Request, Result]], attempts: int = 3) -> None:
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
            (p.trace, repr(outcome) if isinstance(outcome, BaseException) else None, p.taken_ns)
            for p, outcome in zip(group, outcomes, strict=True)
        )
        self._settle(list(zip(group, outcomes, strict=True)))

    @staticmethod
    def _settle(answers: list[tuple[_Pending[Request, Result], Result | BaseException]]) -> None:
        """Answer each caller: thread-safe futures here, each loop's in one hand-over."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future[Any], Any]]] = {}
        for pending, outcome in answers:
            future = pending.future
            if isinstance(future, Future):
                if isinstance(outcome, BaseException):
                    future.set_exception(outcome)
                else:
                    future.set_result(outcome)
            elif pending.loop is not None:
                by_loop.setdefault(pending.loop, []).append((future, outcome))
        for loop, loop_answers in by_loop.items():
            try:
                loop.call_soon_threadsafe(_answer, loop_answers)
            except RuntimeError:  # the loop is closed: nobody is waiting any more
                log.debug("group write answered after its event loop closed")

    def _write(self, group: list[_Pending[Request, Result]]) -> Sequence[Result | Exception]:
        with self.db.write_core() as session:
            # Requests queued while this writer waited for the database (another process's
            # write, on SQLite) go in this group too: one commit fewer.
            self._gather(group)
            outcomes = self.write_group(session, [p.request for p in group])
            if len(outcomes) != len(group):  # rolled back: nobody is told of a write unanswered
                raise RuntimeError(f"write_group answered {len(outcomes)} of {len(group)} requests")
            crash_point("group-commit.before-commit")
        crash_point("group-commit.after-commit")
        metrics.group_committed(len(group))
        return outcomes
