"""The saga phases: max throughput (closed loop) and latency at an offered rate (open loop)."""

from __future__ import annotations

import asyncio
import itertools
import random
import re
import time
import uuid
from typing import Any

import grpc

from bench.loadgen import Counters, closed_loop, open_loop
from bench.procstat import CpuMeter
from bench.stats import summary_ms
from bench.watch import Terminals
from bench.watch_accounting import Truth
from paysaga.v1 import orders_pb2, orders_pb2_grpc

USERS = range(1, 6)
PRODUCTS = range(1, 6)
CALL_TIMEOUT_S = 30.0
#: CpuMeter entries that are not processes of the run.
NOT_PROCESSES = ("other_processes", "machine_busy_fraction")


class OrderMaker:
    """CreateOrder requests spread over users 1..5 and products 1..5, each with a request_id."""

    def __init__(self, channel: grpc.aio.Channel, watcher: Terminals, seed: int = 6) -> None:
        self.stub = orders_pb2_grpc.OrderServiceStub(channel)
        self.watcher = watcher
        self.rng = random.Random(seed)
        self.run_prefix = f"bench-{uuid.uuid4().hex[:8]}-"
        self.prefix = self.run_prefix
        self.seq = itertools.count()
        #: While a phase accounts its watchers' deliveries: the orders CreateOrder made.
        self.truth: Truth | None = None

    def phase(self, name: str | None, truth: Truth | None = None) -> str:
        """Tag the request ids of the orders made from now on with `name` (a phase's orders
        are then told apart from the rest) and note them in `truth`; None: back to untagged.
        Returns the request ids' prefix."""
        self.prefix = f"{self.run_prefix}{name}-" if name else self.run_prefix
        self.truth = truth
        self.watcher.track(self.prefix, truth)
        return self.prefix

    async def create(self) -> tuple[float, asyncio.Future[float]]:
        """Create one order; return when its CreateOrder call started and its terminal future."""
        request_id = f"{self.prefix}{next(self.seq)}"
        future = self.watcher.expect(request_id)
        request = orders_pb2.CreateOrderRequest(
            user_id=self.rng.choice(USERS),
            product_id=self.rng.choice(PRODUCTS),
            request_id=request_id,
        )
        started = time.perf_counter()
        try:
            response = await self.stub.CreateOrder(request, timeout=CALL_TIMEOUT_S)
        except BaseException:
            self.watcher.forget(request_id)
            future.cancel()
            raise
        if self.truth is not None:
            order = response.order
            self.truth.note(order.id, order.user_id, order.version)
        return started, future


#: The services' processes by name: `order`, `order-1`, `order-0-api`, `payment-0-worker`...
SERVICE_PROCESS = re.compile(r"(order|payment)(-\d+)?(-(api|worker))?")


def services_cpu(cpu_used: dict[str, float | None]) -> float | None:
    """CPU seconds of every service process (each replica, each role) together; None if one
    was not measured."""
    values = [v for name, v in cpu_used.items() if SERVICE_PROCESS.fullmatch(name)]
    if not values or None in values:
        return None
    return sum(v for v in values if v is not None)


async def drain(watcher: Terminals, timeout_s: float, label: str) -> float:
    """Wait until every expected order is terminal (or timeout); return the seconds waited."""
    began = time.perf_counter()
    while watcher.pending and time.perf_counter() - began < timeout_s:
        await asyncio.sleep(0.5)
        if int((time.perf_counter() - began) * 2) % 2 == 0:
            print(f"[{label}] draining: {watcher.pending} orders not terminal yet", flush=True)
    return time.perf_counter() - began


async def throughput_phase(
    maker: OrderMaker,
    cpu: CpuMeter,
    *,
    concurrency: int,
    max_backlog: int,
    warmup_s: float,
    duration_s: float,
    drain_timeout_s: float,
) -> dict[str, Any]:
    """`concurrency` CreateOrder calls in flight, at most `max_backlog` sagas unfinished."""
    watcher = maker.watcher
    backlog = asyncio.Semaphore(max_backlog)
    counters = Counters()
    cpu_used: dict[str, float | None] = {}

    async def one_order() -> None:
        await backlog.acquire()
        try:
            _, future = await maker.create()
        except BaseException:
            backlog.release()
            raise
        future.add_done_callback(lambda _: backlog.release())

    def snapshot() -> dict[str, Any]:
        """Called at the window's start (starts the CPU meter) and end (reads it)."""
        if started_cpu:
            cpu_used.update(cpu.stop())
        else:
            cpu.start()
            started_cpu.append(True)
        return {
            "terminal": watcher.terminal,
            "completed": watcher.completed,
            "failed": watcher.failed,
            "created": counters.done,
        }

    started_cpu: list[bool] = []
    previous = {"terminal": 0, "t": time.perf_counter()}

    def progress(elapsed: float, measuring: bool) -> None:
        now = time.perf_counter()
        rate = (watcher.terminal - previous["terminal"]) / (now - previous["t"])
        previous.update(terminal=watcher.terminal, t=now)
        print(
            f"[throughput] {'measure' if measuring else 'warm-up'} t={elapsed:4.0f}s "
            f"created={counters.done} terminal={watcher.terminal} ({rate:.0f}/s) "
            f"unfinished={watcher.pending} errors={counters.errors}",
            flush=True,
        )

    window = await closed_loop(
        one_order,
        concurrency=concurrency,
        warmup_s=warmup_s,
        duration_s=duration_s,
        snapshot=snapshot,
        progress=progress,
        counters=counters,
    )
    drained_s = await drain(watcher, drain_timeout_s, "throughput")
    orders = window.delta("terminal")
    cpu_total = services_cpu(cpu_used)
    processes = [v for k, v in cpu_used.items() if k not in NOT_PROCESSES]
    measured = [v for v in processes if v is not None]
    return {
        "concurrency": concurrency,
        "max_backlog": max_backlog,
        "warmup_s": warmup_s,
        "window_s": round(window.seconds, 2),
        "orders_terminal": int(orders),
        "orders_completed": int(window.delta("completed")),
        "orders_failed": int(window.delta("failed")),
        "orders_per_s": round(orders / window.seconds, 1),
        "creates_per_s": round(window.delta("created") / window.seconds, 1),
        "errors": counters.errors,
        "first_errors": counters.first_errors,
        "cpu_s": cpu_used,
        "cpu_threads_s": cpu.threads,
        "cpu_s_per_1k_orders": round(cpu_total / orders * 1000, 2)
        if cpu_total is not None and orders
        else None,
        # Every process of the run (services, Kafka, PostgreSQL's, load generator) per order:
        # comparable with the echo's CPU per call whatever else runs on the machine.
        "cpu_ms_per_order_all": round(sum(measured) / orders * 1000, 3)
        if orders and measured and len(measured) == len(processes)
        else None,
        "unfinished_after_drain": watcher.pending,
        "drain_s": round(drained_s, 1),
    }


async def latency_phase(
    maker: OrderMaker,
    cpu: CpuMeter,
    *,
    rate: float,
    duration_s: float,
    drain_timeout_s: float,
    label: str = "latency",
    warmup_s: float = 0.0,
) -> dict[str, Any]:
    """Offer `rate` orders/s at scheduled times; time each from CreateOrder to terminal.

    Used by the latency phase (at a share of the measured max throughput) and the light
    phase (a low fixed rate); `label` prefixes the progress lines. With `warmup_s`, the
    same rate is offered that long first and those orders are not measured: the figures
    are the steady state at that rate, not the climb to it from the phase before (an
    idle service's first seconds of load, or streams of the phase before still closing).
    """
    counters = Counters()
    sent: list[tuple[float, float, float, asyncio.Future[float]]] = []
    watcher = maker.watcher
    warming: set[asyncio.Task[None]] = set()
    if warmup_s > 0:
        warming = await _warm_up(maker, rate=rate, duration_s=warmup_s, label=label)

    async def send(scheduled: float) -> None:
        try:
            started, future = await maker.create()
        except Exception as exc:
            counters.error(exc)
            return
        sent.append((scheduled, started, time.perf_counter(), future))

    def progress(elapsed: float) -> None:
        print(
            f"[{label}] t={elapsed:4.0f}s offered={rate:.0f}/s created={len(sent)} "
            f"terminal={watcher.terminal - terminal_before} unfinished={watcher.pending} "
            f"errors={counters.errors}",
            flush=True,
        )

    terminal_before = watcher.terminal
    wall_start, perf_start = time.time(), time.perf_counter()
    cpu.start()
    schedule, tasks = await open_loop(send, rate=rate, duration_s=duration_s, progress=progress)
    began = time.perf_counter()
    if tasks:
        # CreateOrder calls still unanswered after the drain timeout count as errors (an
        # overloaded server), and the phase still reports what it measured.
        _, unanswered = await asyncio.wait(set(tasks), timeout=drain_timeout_s)
        unanswered_error = f"CreateOrder unanswered {drain_timeout_s:g} s after the last send"
        for task in unanswered:
            counters.error(TimeoutError(unanswered_error))
            task.cancel()
        await asyncio.gather(*unanswered, return_exceptions=True)
    if warming:  # long answered by now, unless the server stopped answering
        _, stuck = await asyncio.wait(set(warming), timeout=drain_timeout_s)
        for task in stuck:
            task.cancel()
    await drain(watcher, max(0.0, drain_timeout_s - (time.perf_counter() - began)), label)
    cpu_used = cpu.stop()
    ended = time.perf_counter()
    finished = [(s, st, a, f.result()) for s, st, a, f in sent if f.done() and not f.cancelled()]
    # An unfinished order counts with the time it had waited when we gave up: the
    # percentiles are then lower bounds rather than figures of the survivors only.
    censored = [ended - st for _, st, _, f in sent if not f.done()]
    result: dict[str, Any] = {
        "offered_per_s": round(rate, 1),
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "sent": schedule.sent,
        "achieved_send_per_s": round(schedule.sent / schedule.elapsed_s, 1),
        "max_schedule_lag_ms": round(schedule.max_lag_s * 1000, 1),
        "finished": len(finished),
        "unfinished_after_drain": len(sent) - len(finished),
        "drain_timeout_s": drain_timeout_s,
        "errors": counters.errors,
        "first_errors": counters.first_errors,
        "cpu_s": cpu_used,
        "cpu_threads_s": cpu.threads,
    }
    result.update(summary_ms([done - started for _, started, _, done in finished] + censored))
    result["percentiles_are_lower_bounds"] = bool(censored)
    late = [ended - sched for sched, _, _, f in sent if not f.done()]
    result["from_scheduled"] = summary_ms([done - sch for sch, _, _, done in finished] + late)
    result["create_ack"] = summary_ms([ack - started for _, started, ack, _ in sent])
    result["over_1s"] = sum(1 for _, st, _, done in finished if done - st > 1.0) + sum(
        1 for waited in censored if waited > 1.0
    )
    result["slowest"] = slowest(finished, wall_start, perf_start)
    return result


async def _warm_up(
    maker: OrderMaker, *, rate: float, duration_s: float, label: str
) -> set[asyncio.Task[None]]:
    """Offer `rate` orders/s for `duration_s`, measuring nothing (errors are printed).

    Returns the warm-up's calls still in flight: they go on while the measured orders start.
    """
    counters = Counters()

    async def send(_scheduled: float) -> None:
        try:
            await maker.create()
        except Exception as exc:
            counters.error(exc)

    def progress(elapsed: float) -> None:
        print(f"[{label}] warm-up t={elapsed:4.0f}s offered={rate:.0f}/s", flush=True)

    _, in_flight = await open_loop(send, rate=rate, duration_s=duration_s, progress=progress)
    if counters.errors:
        print(f"[{label}] warm-up: {counters.errors} errors: {counters.first_errors}", flush=True)
    return in_flight


def slowest(
    finished: list[tuple[float, float, float, float]], wall_start: float, perf_start: float
) -> list[dict[str, Any]]:
    """The 5 slowest orders, each with when it was created (seconds into the phase, and the
    wall clock, to find in the services' logs) and how long its CreateOrder took."""
    worst = sorted(finished, key=lambda row: row[3] - row[1], reverse=True)[:5]
    return [
        {
            "at_s": round(started - perf_start, 1),
            "at": time.strftime("%H:%M:%S", time.localtime(wall_start + started - perf_start)),
            "ms": round((done - started) * 1000, 1),
            "create_ack_ms": round((ack - started) * 1000, 1),
        }
        for _, started, ack, done in worst
    ]
