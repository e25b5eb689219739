"""`python -m bench.run`'s command line: which phases, how long, how much load."""

from __future__ import annotations

import argparse
from typing import Any

from bench.stack import default_addresses
from bench.watchers import SCOPES
from deploy.stack.config import DEFAULT_LAYOUT, LAYOUTS, StackConfigError
from deploy.stack.datastores import DB_KINDS
from deploy.stack.stack import check_layout

PHASES = ("echo", "kafka", "throughput", "light", "watchers", "all-orders", "latency")
#: The phases that make orders (over one channel to every Order replica).
SAGA_PHASES = ("throughput", "light", "watchers", "all-orders", "latency")
#: Latency phase's offered rate when no --rate is given and no throughput was measured.
FIXED_RATE = 100.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    order, payment, bootstrap = default_addresses()
    p = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Saga throughput, latency and watchers next to gRPC and Kafka ceilings, "
        "in one run; docs/performance.md tells what each phase measures.",
    )
    p.add_argument(
        "--use-running",
        action="store_true",
        help="measure a running stack instead of starting a private one",
    )
    p.add_argument(
        "--order-address",
        default=None,
        help="with --use-running: the Order replicas, host:port,... (default: every replica "
        f"`make up` runs, or {order})",
    )
    p.add_argument("--payment-address", default=payment, help="with --use-running (%(default)s)")
    p.add_argument("--bootstrap", default=bootstrap, help="with --use-running (%(default)s)")
    p.add_argument("--db", choices=DB_KINDS, default="sqlite", help="private stack's database")
    p.add_argument("--replicas", type=int, default=1, help="private stack: of each service")
    p.add_argument("--brokers", type=int, default=1, help="private stack: Kafka nodes")
    p.add_argument(
        "--roles",
        choices=LAYOUTS,
        default=DEFAULT_LAYOUT,
        help="private stack: each replica as one process (all) or as an api and a worker "
        "process (split) (%(default)s)",
    )
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
    p.add_argument(
        "--latency-warmup",
        type=float,
        default=5.0,
        help="latency phase: seconds of the same load offered first, not measured (5; 0: none)",
    )
    p.add_argument("--light-rate", type=float, default=20.0, help="light phase: orders/s")
    p.add_argument("--light-duration", type=float, default=15.0, help="light phase: seconds")
    p.add_argument(
        "--watchers",
        type=int,
        default=1000,
        help="WatchOrders streams held open during the latency phase, 0: none (%(default)s)",
    )
    p.add_argument(
        "--watch-streams",
        type=int,
        default=1000,
        help="watchers phase: streams on users 1..5 receiving the light load (%(default)s)",
    )
    p.add_argument(
        "--all-orders-streams",
        type=int,
        default=5000,
        help="all-orders phase: streams on every order (%(default)s)",
    )
    p.add_argument(
        "--lone-creates",
        type=int,
        default=50,
        help="all-orders phase: CreateOrder calls made one at a time (%(default)s)",
    )
    p.add_argument(
        "--settle-timeout",
        type=float,
        default=15.0,
        help="watchers and all-orders phases: seconds to wait after the load for every "
        "change to reach every stream (%(default)s)",
    )
    p.add_argument(
        "--watcher-channels",
        type=int,
        default=10,
        help="channels the watchers are spread over, each with connections of its own to "
        "every Order replica (%(default)s)",
    )
    p.add_argument(
        "--watch-scope",
        choices=SCOPES,
        default="quiet",
        help="what the latency phase's watchers watch: quiet = users with no orders (open "
        "streams only), "
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
    p.add_argument("--results-out", default=None, help="also write the results JSON here")
    args = p.parse_args(argv)
    try:
        check_layout(args.db, args.replicas, args.brokers, args.roles)
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
