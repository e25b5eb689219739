"""The phases with WatchOrders streams that receive changes while orders are made.

- `watchers`: N streams (1,000), each watching one of the bench's five users, so that each
  change goes to N/5 of them, while the light load runs again (same rate and length). It
  reports deliveries per second, the delay from a change's update_time to its arrival,
  missed and duplicated changes (bench/watch_accounting.py), and the light load's
  create->terminal p99 next to the light phase's, measured without them.
- `all-orders`: N streams (5,000) on every order while CreateOrder is called alone, one call
  after the other once the previous order is terminal: the call's latency while each change
  goes to every stream, and whether every stream received every change; the commit probe
  (bench/commit_probe.py) beside the calls tells how fast the disk commits meanwhile.

The streams live in a child process (bench/watchers.py) spread over every Order replica.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.commit_probe import CommitProbe
from bench.loadgen import Counters
from bench.procstat import CpuMeter
from bench.saga import OrderMaker, latency_phase
from bench.stats import summary_ms
from bench.watch_accounting import Truth
from bench.watchers import WatchersProcess


def _opened(label: str, watchers: WatchersProcess) -> None:
    opened = watchers.opened
    print(
        f"[{label}] {opened['opened']}/{opened['requested']} streams ({opened['scope']}) "
        f"subscribed in {opened['open_s']} s; errors {opened['errors'] or 'none'}",
        flush=True,
    )


def _accounted(label: str, held: dict[str, Any]) -> None:
    checked, lag = held.get("accounting", {}), held.get("lag", {})
    print(
        f"[{label}] {checked.get('delivered')} deliveries ({held.get('deliveries_per_s')}/s), "
        f"lag p50 {lag.get('p50_ms')} / p99 {lag.get('p99_ms')} ms, missed "
        f"{checked.get('missed')}, duplicated {checked.get('duplicated')}, misrouted "
        f"{checked.get('misrouted')}; {held.get('resumed')} streams resumed",
        flush=True,
    )


async def receiving_watchers_phase(
    maker: OrderMaker,
    cpu: CpuMeter,
    addresses: list[str],
    *,
    streams: int,
    channels: int,
    rate: float,
    duration_s: float,
    drain_timeout_s: float,
    settle_timeout_s: float,
    without: dict[str, Any] | None,
) -> dict[str, Any]:
    """The light load again, with `streams` streams on the bench's users receiving it."""
    truth = Truth()
    prefix = maker.phase("watchers", truth)
    print(f"[watchers] opening {streams} WatchOrders streams on users 1..5", flush=True)
    try:
        watchers = await WatchersProcess.start(
            addresses,
            count=streams,
            channels=channels,
            scope="users",
            open_timeout_s=60.0,
            prefix=prefix,
            settle_timeout_s=settle_timeout_s,
        )
        _opened("watchers", watchers)
        cpu.pids["watchers"] = watchers.pid
        try:
            light = await latency_phase(
                maker,
                cpu,
                rate=rate,
                duration_s=duration_s,
                drain_timeout_s=drain_timeout_s,
                label="watchers",
            )
        finally:
            cpu.pids.pop("watchers", None)
            held = await watchers.stop(dict(truth.orders))
    finally:
        maker.phase(None)
    _accounted("watchers", held)
    without_p99 = (without or {}).get("p99_ms")
    with_p99 = light.get("p99_ms")
    print(f"[watchers] light load p99 {with_p99} ms (without watchers {without_p99} ms)")
    return {
        **held,
        "light": light,
        "light_without_watchers_p99_ms": without_p99,
        "p99_with_over_without": round(with_p99 / without_p99, 2)
        if with_p99 and without_p99
        else None,
    }


async def all_orders_phase(
    maker: OrderMaker,
    cpu: CpuMeter,
    addresses: list[str],
    *,
    streams: int,
    channels: int,
    creates: int,
    terminal_timeout_s: float,
    settle_timeout_s: float,
    max_s: float,
    probe_dir: Path,
) -> dict[str, Any]:
    """`creates` CreateOrder calls one at a time with `streams` streams on every order, and
    the commit probe (bench.commit_probe) beside them."""
    truth = Truth()
    prefix = maker.phase("all-orders", truth)
    print(f"[all-orders] opening {streams} WatchOrders streams on every order", flush=True)
    counters = Counters()
    acks: list[float] = []
    terminals: list[float] = []
    late = 0
    try:
        watchers = await WatchersProcess.start(
            addresses,
            count=streams,
            channels=channels,
            scope="all",
            open_timeout_s=120.0,
            prefix=prefix,
            settle_timeout_s=settle_timeout_s,
        )
        _opened("all-orders", watchers)
        cpu.pids["watchers"] = watchers.pid
        cpu.start()
        probe = None
        began = time.perf_counter()
        try:
            probe = await CommitProbe.start(probe_dir)
            for i in range(creates):
                if time.perf_counter() - began > max_s:
                    print(f"[all-orders] stopped after {i} creates: {max_s:g} s spent", flush=True)
                    break
                try:
                    started, future = await maker.create()
                except Exception as exc:
                    counters.error(exc)
                    continue
                acks.append(time.perf_counter() - started)
                try:
                    terminals.append(await asyncio.wait_for(future, terminal_timeout_s) - started)
                except TimeoutError:
                    late += 1
                if (i + 1) % 10 == 0:
                    ack = summary_ms(acks)
                    print(
                        f"[all-orders] {i + 1} creates: CreateOrder p50 {ack['p50_ms']} / max "
                        f"{ack['max_ms']} ms; errors {counters.errors}",
                        flush=True,
                    )
        finally:
            disk_commit = await probe.stop() if probe else {"error": "the probe did not start"}
            cpu_used = cpu.stop()
            cpu.pids.pop("watchers", None)
            held = await watchers.stop(dict(truth.orders))
    finally:
        maker.phase(None)
    _accounted("all-orders", held)
    return {
        **held,
        "creates": len(acks),
        "errors": counters.errors,
        "first_errors": counters.first_errors,
        "create_ack": summary_ms(acks),
        "create_terminal": summary_ms(terminals),
        "not_terminal_within_s": {"timeout_s": terminal_timeout_s, "orders": late},
        "cpu_s": cpu_used,
        "disk_commit": disk_commit,
    }
