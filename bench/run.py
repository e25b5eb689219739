"""`python -m bench.run`: saga throughput and latency next to gRPC and Kafka ceilings, one run."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import time
from collections.abc import Coroutine
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from bench.balancing import balanced_channel, split_addresses
from bench.commit_probe import CommitProbe, describe
from bench.echo import echo_ceiling
from bench.kafka_pipe import kafka_ceiling
from bench.options import SAGA_PHASES, latency_rate, parse_args
from bench.procstat import CpuMeter
from bench.report import git_commit, save, summary, table
from bench.saga import OrderMaker, latency_phase, throughput_phase
from bench.stack import (
    Stack,
    default_addresses,
    private_stack,
    running_order_addresses,
    running_stack,
)
from bench.waits import WaitMeter
from bench.watch import Terminals
from bench.watch_phases import all_orders_phase, receiving_watchers_phase
from bench.watchers import WatchersProcess


async def latency_with_watchers(
    maker: OrderMaker,
    cpu: CpuMeter,
    stack: Stack,
    args: argparse.Namespace,
    throughput: dict[str, Any] | None,
    waits: WaitMeter,
) -> dict[str, Any]:
    """The latency phase, with `--watchers` streams (`--watch-scope`) held open meanwhile."""
    out: dict[str, Any] = {}
    watchers = None
    if args.watchers > 0:
        print(
            f"[latency] opening {args.watchers} WatchOrders streams ({args.watch_scope}) "
            f"over {args.watcher_channels} channels",
            flush=True,
        )
        watchers = await WatchersProcess.start(
            stack.order_addresses,
            count=args.watchers,
            channels=args.watcher_channels,
            scope=args.watch_scope,
            open_timeout_s=60.0,
        )
        opened = watchers.opened
        print(
            f"[latency] {opened['opened']}/{opened['requested']} streams subscribed in "
            f"{opened['open_s']} s; errors {opened['errors'] or 'none'}",
            flush=True,
        )
        cpu.pids["watchers"] = watchers.pid
    try:
        rate, source = latency_rate(args, throughput)
        print(f"[latency] offering {rate:.1f} orders/s: {source}", flush=True)
        probe = await CommitProbe.start(probe_dir(stack))
        try:
            out["latency"] = lat = await metered(
                waits,
                latency_phase(
                    maker,
                    cpu,
                    rate=rate,
                    duration_s=args.latency_duration,
                    drain_timeout_s=args.drain_timeout,
                    warmup_s=args.latency_warmup,
                ),
            )
        finally:
            disk_commit = await probe.stop()
        lat["disk_commit"] = disk_commit
        lat["rate_source"] = source
        lat["watchers_open"] = watchers is not None
        print(f"[latency] p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms", flush=True)
    finally:
        if watchers is not None:
            cpu.pids.pop("watchers", None)
            out["watchers"] = held = await watchers.stop()
            print(
                f"[latency] {held['open_at_end']} streams still open at the end; "
                f"{held['responses']} responses; errors {held['errors'] or 'none'}",
                flush=True,
            )
    return out


async def metered(waits: WaitMeter, phase: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run `phase` with the services' metrics read before and after it (its "waits": the
    whole phase, any warm-up and drain included; means per event, see bench.waits)."""
    await asyncio.to_thread(waits.start)
    result = await phase
    result["waits"] = await asyncio.to_thread(waits.stop)
    return result


def probe_dir(stack: Stack) -> Path:
    """Where the commit probe's file goes: the disk of the stack's databases (a running
    stack of `make up` keeps them in var/)."""
    if stack.home is not None:
        return stack.home
    return Path("var") if Path("var").is_dir() else Path(".")


async def idle_commits(stack: Stack, seconds: float = 5.0) -> dict[str, Any]:
    """The commit probe before any load (250 commits): the disk's own latency."""
    probe = await CommitProbe.start(probe_dir(stack), interval_ms=20.0)
    await asyncio.sleep(seconds)
    result = await probe.stop()
    print(f"[disk] a bare commit with nothing running: {describe(result)}", flush=True)
    return result


async def saga_phases(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """The saga phases over one channel to every Order replica (round_robin) and ONE
    WatchOrders stream opened before any load: max throughput, light load, the light load
    again with receiving watchers, lone creates under all-orders watchers, then latency at
    a share of that max with quiet watchers open."""
    out: dict[str, Any] = {}
    cpu = CpuMeter({**stack.pids, "loadgen": os.getpid()})
    waits = WaitMeter(stack.metrics_addresses)
    if "all-orders" in args.phases or "latency" in args.phases:
        out["disk_commit_idle"] = await idle_commits(stack)
    async with balanced_channel(stack.order_addresses) as channel:
        watcher = Terminals(channel)
        await watcher.start()
        print("[saga] WatchOrders subscribed (initial metadata received)", flush=True)
        maker = OrderMaker(channel, watcher)
        try:
            if "throughput" in args.phases:
                out["throughput"] = await metered(
                    waits,
                    throughput_phase(
                        maker,
                        cpu,
                        concurrency=args.concurrency,
                        max_backlog=args.max_backlog,
                        warmup_s=args.warmup,
                        duration_s=args.duration,
                        drain_timeout_s=args.drain_timeout,
                    ),
                )
                print(f"[throughput] {out['throughput']['orders_per_s']} orders/s", flush=True)
            if "light" in args.phases:
                out["light"] = light = await metered(
                    waits,
                    latency_phase(
                        maker,
                        cpu,
                        rate=args.light_rate,
                        duration_s=args.light_duration,
                        drain_timeout_s=args.drain_timeout,
                        label="light",
                    ),
                )
                print(f"[light] p50 {light['p50_ms']} ms, p99 {light['p99_ms']} ms", flush=True)
            if "watchers" in args.phases and args.watch_streams > 0:
                out["receiving_watchers"] = await receiving_watchers_phase(
                    maker,
                    cpu,
                    stack.order_addresses,
                    streams=args.watch_streams,
                    channels=args.watcher_channels,
                    rate=args.light_rate,
                    duration_s=args.light_duration,
                    drain_timeout_s=args.drain_timeout,
                    settle_timeout_s=args.settle_timeout,
                    without=out.get("light"),
                )
            if "all-orders" in args.phases and args.all_orders_streams > 0:
                out["all_orders"] = await all_orders_phase(
                    maker,
                    cpu,
                    stack.order_addresses,
                    streams=args.all_orders_streams,
                    channels=args.watcher_channels,
                    creates=args.lone_creates,
                    terminal_timeout_s=10.0,
                    settle_timeout_s=args.settle_timeout,
                    max_s=120.0,
                    probe_dir=probe_dir(stack),
                )
            if "latency" in args.phases:
                out |= await latency_with_watchers(
                    maker, cpu, stack, args, out.get("throughput"), waits
                )
        finally:
            out["watch"] = watcher.report()
            await watcher.close()
    return out


def measure(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    results: dict[str, Any] = {}
    if "echo" in args.phases:
        for model in ("sync", "aio"):
            print(f"== gRPC echo ceiling ({model} server, separate process)", flush=True)
            results[f"grpc_echo_{model}"] = echo_ceiling(
                model, concurrency=args.concurrency, warmup_s=2.0, duration_s=args.echo_duration
            )
    if "kafka" in args.phases:
        print("== Kafka 3-hop ceiling (separate processes, same broker)", flush=True)
        results["kafka"] = kafka_ceiling(
            stack.bootstrap,
            count=args.kafka_events,
            pids={k: v for k, v in stack.pids.items() if k == "kafka"},
        )
    if set(SAGA_PHASES) & set(args.phases):
        targets = ", ".join(stack.order_addresses)
        print(f"== saga: {', '.join(p for p in SAGA_PHASES if p in args.phases)}", flush=True)
        print(f"   load balanced (round_robin) over the Order replicas {targets}", flush=True)
        results.update(asyncio.run(saga_phases(stack, args)))
    return results


def _stop(*_: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _stop)
    commit, dirty = git_commit()
    results: dict[str, Any] = {
        "started_at": datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%SZ"),
        "commit": commit,
        "dirty": dirty,
        "machine": f"{os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}",
        "args": {k: v for k, v in vars(args).items() if k != "phases"},
        # The machine is shared: its load before and after the run, for context.
        "load_avg": {"start": [round(x, 2) for x in os.getloadavg()]},
    }
    began = time.monotonic()
    use_running = args.use_running or any(
        f"--{name}" in arg
        for arg in (argv or sys.argv[1:])
        for name in ("order-address", "payment-address", "bootstrap")
    )
    stack_cm: AbstractContextManager[Stack] = (
        running_stack(
            split_addresses(args.order_address or "")
            or running_order_addresses()
            or [default_addresses()[0]],
            args.payment_address,
            args.bootstrap,
        )
        if use_running
        else private_stack(
            args.keep,
            db=args.db,
            replicas=args.replicas,
            brokers=args.brokers,
            roles=args.roles,
            metrics=args.metrics == "on",
        )
    )
    with stack_cm as stack:
        results["stack"] = "running" if use_running else "private"
        results["shape"] = stack.shape
        results["order_replicas_called"] = stack.order_addresses
        results.update(measure(stack, args))
    # The services run grpc.aio servers: the ceiling is the echo of the same server model.
    echo = results.get("grpc_echo_aio", {}).get("rps")
    orders = results.get("throughput", {}).get("orders_per_s")
    results["ratio_to_grpc_echo"] = round(orders / echo, 3) if echo and orders else None
    # The same ratio from CPU per call and per order: what the run would give if it had the
    # machine to itself (the machine is shared, and the phases do not run at the same time).
    echo_cpu = results.get("grpc_echo_aio", {}).get("cpu_ms_per_call")
    order_cpu = results.get("throughput", {}).get("cpu_ms_per_order_all")
    results["ratio_cpu_normalised"] = (
        round(echo_cpu / order_cpu, 3) if echo_cpu and order_cpu else None
    )
    results["load_avg"]["end"] = [round(x, 2) for x in os.getloadavg()]
    results["run_s"] = round(time.monotonic() - began, 1)
    results["summary"] = summary(results)
    print()
    print(table(results))
    if not args.no_save:
        print(f"\nresults saved to {save(results)}")
    if args.results_out:
        Path(args.results_out).write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results["summary"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
