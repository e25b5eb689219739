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
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import grpc

from bench.echo import echo_ceiling
from bench.kafka_pipe import kafka_ceiling
from bench.procstat import CpuMeter
from bench.report import git_commit, save, summary, table
from bench.saga import OrderMaker, latency_phase, throughput_phase
from bench.stack import Stack, default_addresses, private_stack, running_stack
from bench.watch import Terminals
from bench.watchers import SCOPES, WatchersProcess
from deploy.stack.config import StackConfigError
from deploy.stack.datastores import DB_KINDS
from deploy.stack.stack import check_layout

PHASES = ("echo", "kafka", "throughput", "light", "watchers", "latency")
#: Latency phase's offered rate when no --rate is given and no throughput was measured.
FIXED_RATE = 100.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    order, payment, bootstrap = default_addresses()
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    p.add_argument(
        "--use-running",
        action="store_true",
        help="measure a running stack instead of starting a private one",
    )
    p.add_argument("--order-address", default=order, help="with --use-running (%(default)s)")
    p.add_argument("--payment-address", default=payment, help="with --use-running (%(default)s)")
    p.add_argument("--bootstrap", default=bootstrap, help="with --use-running (%(default)s)")
    p.add_argument("--db", choices=DB_KINDS, default="sqlite", help="private stack's database")
    p.add_argument("--replicas", type=int, default=1, help="private stack: of each service")
    p.add_argument("--brokers", type=int, default=1, help="private stack: Kafka nodes")
    p.add_argument("--only", default=",".join(PHASES), help="phases to run (%(default)s)")
    p.add_argument("--concurrency", type=int, default=64, help="calls in flight (%(default)s)")
    p.add_argument("--warmup", type=float, default=5.0, help="seconds before measuring")
    p.add_argument("--duration", type=float, default=20.0, help="throughput window, seconds")
    p.add_argument(
        "--max-backlog",
        type=int,
        default=2000,
        help="most unfinished sagas during the throughput phase (%(default)s)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=None,
        help="latency phase: offered orders/s (default: --rate-share of the max throughput "
        f"this run measured, or {FIXED_RATE:g}/s without a throughput phase)",
    )
    p.add_argument(
        "--rate-share",
        type=float,
        default=0.5,
        help="latency phase: share of the measured max throughput offered (%(default)s)",
    )
    p.add_argument("--latency-duration", type=float, default=15.0, help="seconds of offered load")
    p.add_argument("--light-rate", type=float, default=20.0, help="light phase: orders/s")
    p.add_argument("--light-duration", type=float, default=15.0, help="light phase: seconds")
    p.add_argument(
        "--watchers",
        type=int,
        default=1000,
        help="WatchOrders streams held open during the latency phase (%(default)s)",
    )
    p.add_argument(
        "--watcher-channels",
        type=int,
        default=10,
        help="connections the watchers are spread over (%(default)s)",
    )
    p.add_argument(
        "--watch-scope",
        choices=SCOPES,
        default="quiet",
        help="what the watchers watch: quiet = users with no orders (open streams only), "
        "users = the bench's users (each change to N/5 streams), all = every order "
        "(%(default)s)",
    )
    p.add_argument(
        "--drain-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for unfinished orders after a phase (%(default)s)",
    )
    p.add_argument("--echo-duration", type=float, default=8.0, help="echo window, seconds")
    p.add_argument("--kafka-events", type=int, default=50000, help="events through the pipeline")
    p.add_argument(
        "--metrics",
        choices=("on", "off"),
        default="on",
        help="private stack: Prometheus metrics recorded and served, or not (%(default)s)",
    )
    p.add_argument("--keep", action="store_true", help="keep the private stack's dir (logs, dbs)")
    p.add_argument("--no-save", action="store_true", help="do not write bench/results/*.json")
    args = p.parse_args(argv)
    try:
        check_layout(args.db, args.replicas, args.brokers)
    except StackConfigError as exc:
        p.error(str(exc))
    args.phases = [x.strip() for x in args.only.split(",") if x.strip()]
    unknown = set(args.phases) - set(PHASES)
    if unknown:
        p.error(f"unknown phase(s) {sorted(unknown)}; choose from {', '.join(PHASES)}")
    return args


def latency_rate(args: argparse.Namespace, throughput: dict[str, Any] | None) -> tuple[float, str]:
    """The latency phase's offered rate and where it comes from."""
    if args.rate is not None:
        return args.rate, "--rate"
    measured = (throughput or {}).get("orders_per_s")
    if measured:
        return (
            max(1.0, measured * args.rate_share),
            f"{args.rate_share:g} x max throughput measured in this run ({measured} orders/s)",
        )
    return FIXED_RATE, f"fixed default {FIXED_RATE:g}/s: no throughput phase and no --rate"


async def saga_phases(stack: Stack, args: argparse.Namespace) -> dict[str, Any]:
    """The saga phases over one channel and ONE WatchOrders stream opened before any load:
    max throughput, light load, then latency at a share of that max with watchers open."""
    out: dict[str, Any] = {}
    cpu = CpuMeter({**stack.pids, "loadgen": os.getpid()})
    async with grpc.aio.insecure_channel(stack.order_address) as channel:
        watcher = Terminals(channel)
        await watcher.start()
        print("[saga] WatchOrders subscribed (initial metadata received)", flush=True)
        maker = OrderMaker(channel, watcher)
        try:
            if "throughput" in args.phases:
                out["throughput"] = await throughput_phase(
                    maker,
                    cpu,
                    concurrency=args.concurrency,
                    max_backlog=args.max_backlog,
                    warmup_s=args.warmup,
                    duration_s=args.duration,
                    drain_timeout_s=args.drain_timeout,
                )
                print(f"[throughput] {out['throughput']['orders_per_s']} orders/s", flush=True)
            if "light" in args.phases:
                out["light"] = await latency_phase(
                    maker,
                    cpu,
                    rate=args.light_rate,
                    duration_s=args.light_duration,
                    drain_timeout_s=args.drain_timeout,
                    label="light",
                )
                light = out["light"]
                print(f"[light] p50 {light['p50_ms']} ms, p99 {light['p99_ms']} ms", flush=True)
            watchers = None
            if "watchers" in args.phases and args.watchers > 0:
                print(
                    f"[watchers] opening {args.watchers} WatchOrders streams "
                    f"({args.watch_scope}) over {args.watcher_channels} connections",
                    flush=True,
                )
                watchers = await WatchersProcess.start(
                    stack.order_address,
                    count=args.watchers,
                    channels=args.watcher_channels,
                    scope=args.watch_scope,
                    open_timeout_s=60.0,
                )
                opened = watchers.opened
                print(
                    f"[watchers] {opened['opened']}/{opened['requested']} subscribed in "
                    f"{opened['open_s']} s; errors {opened['errors'] or 'none'}",
                    flush=True,
                )
                cpu.pids["watchers"] = watchers.pid
            try:
                if "latency" in args.phases:
                    rate, source = latency_rate(args, out.get("throughput"))
                    print(f"[latency] offering {rate:.1f} orders/s: {source}", flush=True)
                    out["latency"] = await latency_phase(
                        maker,
                        cpu,
                        rate=rate,
                        duration_s=args.latency_duration,
                        drain_timeout_s=args.drain_timeout,
                    )
                    lat = out["latency"]
                    lat["rate_source"] = source
                    lat["watchers_open"] = watchers is not None
                    print(f"[latency] p50 {lat['p50_ms']} ms, p99 {lat['p99_ms']} ms", flush=True)
                elif watchers is not None:
                    await asyncio.sleep(args.latency_duration)  # held as long as that phase
            finally:
                if watchers is not None:
                    cpu.pids.pop("watchers", None)
                    out["watchers"] = await watchers.stop()
                    held = out["watchers"]
                    print(
                        f"[watchers] {held['open_at_end']} still open at the end; "
                        f"{held['responses']} responses; errors {held['errors'] or 'none'}",
                        flush=True,
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
    if {"throughput", "light", "watchers", "latency"} & set(args.phases):
        print("== saga: max throughput, light load, latency with watchers open", flush=True)
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
        running_stack(args.order_address, args.payment_address, args.bootstrap)
        if use_running
        else private_stack(
            args.keep,
            db=args.db,
            replicas=args.replicas,
            brokers=args.brokers,
            metrics=args.metrics == "on",
        )
    )
    with stack_cm as stack:
        results["stack"] = "running" if use_running else "private"
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
    print(json.dumps(results["summary"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
