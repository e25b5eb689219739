"""Closed-loop (N calls in flight) and open-loop (calls at scheduled times) load over asyncio."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

#: One operation of the load: returns when it is done (raise to count an error).
Operation = Callable[[], Awaitable[None]]


@dataclass
class Counters:
    """What the loops did: operations done and failed, and the first errors seen."""

    done: int = 0
    errors: int = 0
    first_errors: list[str] = field(default_factory=list)

    def error(self, exc: BaseException) -> None:
        self.errors += 1
        if len(self.first_errors) < 3:
            self.first_errors.append(f"{type(exc).__name__}: {exc}"[:300])


@dataclass
class Window:
    """A measurement window: its length and what `snapshot` said at its start and end."""

    seconds: float
    start: dict[str, Any]
    end: dict[str, Any]

    def delta(self, key: str) -> float:
        return float(self.end[key]) - float(self.start[key])


async def closed_loop(
    op: Operation,
    *,
    concurrency: int,
    warmup_s: float,
    duration_s: float,
    snapshot: Callable[[], dict[str, Any]],
    progress: Callable[[float, bool], None],
    counters: Counters,
    finish_s: float = 30.0,
) -> Window:
    """Run `concurrency` workers calling `op` back to back; measure after a warm-up.

    `snapshot` is called at the window's start and end (counters, CPU); `progress(elapsed,
    measuring)` once a second. After the window each worker finishes the call it has in
    flight (up to `finish_s`; only then is it cancelled): a cancelled CreateOrder would
    leave an order whose caller never learnt of it, which no client does on purpose.
    """
    stopping = False

    async def worker() -> None:
        while not stopping:
            try:
                await op()
                counters.done += 1
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                counters.error(exc)
                await asyncio.sleep(0.05)

    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    began = time.perf_counter()
    try:
        await _tick(began, began + warmup_s, lambda t: progress(t, False))
        start, t0 = snapshot(), time.perf_counter()
        await _tick(began, t0 + duration_s, lambda t: progress(t, True))
        end, t1 = snapshot(), time.perf_counter()
    finally:
        stopping = True
        _, late = await asyncio.wait(workers, timeout=finish_s)
        for task in late:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    return Window(t1 - t0, start, end)


async def _tick(began: float, until: float, progress: Callable[[float], None]) -> None:
    """Sleep until `until`, calling progress(elapsed since began) once a second."""
    while (left := until - time.perf_counter()) > 0:
        await asyncio.sleep(min(1.0, left))
        if until - time.perf_counter() > 0.05:
            progress(time.perf_counter() - began)


@dataclass
class Schedule:
    """How well the open loop kept its schedule."""

    sent: int = 0
    max_lag_s: float = 0.0
    elapsed_s: float = 0.0


async def open_loop(
    send: Callable[[float], Coroutine[Any, Any, None]],
    *,
    rate: float,
    duration_s: float,
    progress: Callable[[float], None],
) -> tuple[Schedule, set[asyncio.Task[None]]]:
    """Start `send(scheduled_time)` at t0 + i/rate for i < rate*duration, never back to back.

    Returns at the last scheduled send, with the tasks still running (the caller drains them).
    """
    schedule = Schedule()
    tasks: set[asyncio.Task[None]] = set()
    total = int(rate * duration_s)
    t0 = time.perf_counter() + 0.01
    next_tick = t0 + 1.0
    for i in range(total):
        at = t0 + i / rate
        now = time.perf_counter()
        if at > now:
            await asyncio.sleep(at - now)
        else:
            schedule.max_lag_s = max(schedule.max_lag_s, now - at)
            await asyncio.sleep(0)  # behind schedule: still let the calls in flight progress
        task = asyncio.create_task(send(at))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        schedule.sent += 1
        if time.perf_counter() >= next_tick:
            progress(time.perf_counter() - t0)
            next_tick += 1.0
    schedule.elapsed_s = time.perf_counter() - t0
    return schedule, tasks
