"""`python -m bench.fanout`: WatchOrders fan-out in one process, and what it costs unary calls.

A real Order gRPC server (services.order's servicer, feed and streams on GrpcApp, SQLite in
a temp dir, no Kafka) on loopback. A thread stands in for the tail of `order-updates`: it
publishes synthetic changes to the feed at `--rate` per second, as the tail does. Two
child processes are the clients (bench/fanout_clients.py), so that their CPU is not the
server's GIL:

- `streams`: `--streams` WatchOrders streams over `--channels` connections, watching every
  order (`--scope all`) or one of `--users` users each (`--scope users`). Each stream
  checks that it gets every change it watches once (it reconnects with its last
  resume_token when the server ends it as too slow) and times each change from its
  publication to its arrival;
- `probe`: one CreateOrder, then one health check, at a time, `--interval` apart, for
  `--duration` seconds.

Phases: the probe alone (no streams), then the probe while the streams receive. It prints
a table and one JSON line: both probes' p50/p99/max alone and with the streams,
deliveries/s, delivery lag, missed and duplicated deliveries, the server's event-loop lag
(how late a 10 ms timer on the gRPC loop fires: what every unary call waits behind), its
garbage collector's pauses and its CPU.
A/B: run it back to back on two trees with the same arguments (the machine is noisy).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from sqlmodel import col, update

from bench.stats import summary_ms
from paysaga.v1 import orders_pb2
from services.common.persistence.db import Database
from services.common.persistence.migrate import migrate
from services.common.security.interceptor import authenticator
from services.common.serving.grpc_app import GrpcApp, settle_heap
from services.order.__main__ import MIGRATIONS, SERVICE_NAME
from services.order.feed import Change, OrderFeed
from services.order.models import Order
from services.order.server import OrderServicer, register_order_service
from services.order.store import seed_catalogue
from services.order.streams import WatchStreams

PARTITIONS = 3


# -- the server side (this process) -----------------------------------------------------


class Publisher(threading.Thread):
    """Publishes `rate` synthetic changes per second to the feed, as the tail's thread does."""

    def __init__(self, feed: OrderFeed, rate: float, users: int) -> None:
        super().__init__(name="bench-publisher", daemon=True)
        self.feed, self.rate, self.users = feed, rate, users
        self.sent = 0
        self.started_at = 0.0
        self._offsets = [0] * PARTITIONS
        self._halt = threading.Event()

    def _change(self, seq: int) -> Change:
        order = orders_pb2.Order(
            id=f"bench-{seq}",
            user_id=1 + seq % self.users,
            product_id=1,
            price_cents=5000,
            status=orders_pb2.ORDER_STATUS_CREATED,
            version=1,
            request_id=str(uuid.uuid4()),
        )
        order.update_time.GetCurrentTime()
        partition = seq % PARTITIONS
        offset = self._offsets[partition]
        self._offsets[partition] += 1
        return Change(partition, offset, order)

    def run(self) -> None:
        self.started_at = time.time()
        began = time.perf_counter()
        while not self._halt.is_set():
            due = int((time.perf_counter() - began) * self.rate)
            if due > self.sent:
                self.feed.publish_threadsafe([self._change(s) for s in range(self.sent, due)])
                self.sent = due
            self._halt.wait(0.005)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.sent


class Server:
    """The Order servicer, feed and streams on a real grpc.aio server (GrpcApp)."""

    def __init__(self, home: Path, max_backlog: int, max_writing: int | None) -> None:
        url = f"sqlite:///{home}/order.db"
        migrate(url, MIGRATIONS)
        self.db = Database(url)
        seed_catalogue(self.db)
        self.feed = OrderFeed(50_000, max_backlog)
        if max_writing is not None:
            self.feed.turns.max_writing = max_writing
        streams = WatchStreams(
            self.db,
            self.feed,
            max_streams=100_000,
            max_streams_per_caller=100_000,
            max_streams_per_operator=100_000,
        )
        servicer = OrderServicer(self.db, streams, deadline_s=60.0)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.app = GrpcApp(
            address="127.0.0.1:0",
            service_names=[SERVICE_NAME],
            register=lambda server: register_order_service(server, servicer),
            workers=[servicer.writes],
            readiness_checks=[],
            on_loop=[self.feed.bind, self._bind],
            on_drain=[self.feed.close],
            interceptors=[authenticator()],  # auth off unless PAYSAGA_AUTH_ENABLED says
            reflection=False,
        )
        self.app.start()
        settle_heap()  # as a service process does once it is up
        self.feed.started_threadsafe(dict.fromkeys(range(PARTITIONS), 0))
        self.feed.caught_up_threadsafe()

    def _bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def end_orders(self) -> None:
        """Every probe order COMPLETED: a stream opened later has no initial state to send."""
        with self.db.write() as session:
            session.execute(
                update(Order).where(col(Order.status) == "CREATED").values(status="COMPLETED")
            )

    def loop_lag(self) -> tuple[list[float], Any]:
        """Start timing a 10 ms sleep on the gRPC loop; returns the samples and the future."""
        samples: list[float] = []

        async def measure() -> None:
            while True:
                began = time.perf_counter()
                await asyncio.sleep(0.01)
                samples.append(time.perf_counter() - began - 0.01)

        assert self.loop is not None
        return samples, asyncio.run_coroutine_threadsafe(measure(), self.loop)

    def stop(self) -> None:
        self.app.stop()
        self.db.dispose()


class GcPauses:
    """How long the cyclic garbage collector stops this process (every thread), by generation."""

    def __init__(self) -> None:
        self.pauses: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._began = 0.0
        gc.callbacks.append(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses[info["generation"]].append(time.perf_counter() - self._began)

    def take(self) -> dict[str, Any]:
        """Pauses since the last take: count and longest per generation."""
        taken = {
            f"gen{g}": {"count": len(p), "max_ms": round(max(p, default=0) * 1000, 1)}
            for g, p in self.pauses.items()
        }
        for pauses in self.pauses.values():
            pauses.clear()
        return taken


def _child(role: str, args: argparse.Namespace, address: str) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "bench.fanout_clients", role, "--address", address]
    for name in ("streams", "channels", "scope", "users", "duration", "interval"):
        command += [f"--{name}", str(getattr(args, name))]
    return subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
    )


def _read(process: subprocess.Popen[str], tag: str) -> dict[str, Any]:
    assert process.stdout is not None
    for line in process.stdout:
        if line.startswith(tag + " "):
            return json.loads(line[len(tag) + 1 :])  # type: ignore[no-any-return]
    raise RuntimeError(f"the {tag} line never came (exit status {process.wait()})")


def _probe_phase(address: str, args: argparse.Namespace) -> dict[str, Any]:
    probe = _child("probe", args, address)
    result = _read(probe, "RESULT")
    probe.wait()
    return result


def run(args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="fanout-") as home:
        server = Server(Path(home), args.max_backlog, args.max_writing)
        try:
            gc_pauses = GcPauses()
            lag_alone, lag_task = server.loop_lag()
            alone = _probe_phase(server.app.address, args)
            lag_task.cancel()
            gc_alone = gc_pauses.take()
            server.end_orders()
            streams = _child("streams", args, server.app.address)
            opened = _read(streams, "OPENED")
            gc_pauses.take()  # not those of opening the streams
            publisher = Publisher(server.feed, args.rate, args.users)
            lag, lag_task = server.loop_lag()
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            publisher.start()
            loaded = _probe_phase(server.app.address, args)
            published = publisher.stop()
            gc_loaded = gc_pauses.take()
            cpu = time.process_time() - cpu_before
            wall = time.perf_counter() - wall_before
            lag_task.cancel()
            assert streams.stdin is not None
            streams.stdin.write(f"END {published} {args.drain}\n")
            streams.stdin.flush()
            received = _read(streams, "RESULT")
            streams.wait()
        finally:
            server.stop()
    seconds = max(1e-9, received["last_at"] - publisher.started_at)
    return {
        "streams": args.streams,
        "scope": args.scope,
        "opened": opened["opened"],
        "published": published,
        "create_alone": alone["latency"],
        "create_with_streams": loaded["latency"],
        "health_alone": alone["health"],
        "health_with_streams": loaded["health"],
        "probe_errors": alone["errors"] + loaded["errors"],
        "deliveries": received["delivered"],
        "deliveries_per_s": round(received["delivered"] / seconds),
        "delivery_lag": received["lag"],
        "missed": received["missed"],
        "duplicated": received["duplicated"],
        "reconnects": received["reconnects"],
        "stream_errors": received["errors"],
        "loop_lag_alone": summary_ms(lag_alone),
        "loop_lag": summary_ms(lag),
        "gc_alone": gc_alone,
        "gc_with_streams": gc_loaded,
        "server_cpu_per_s": round(cpu / wall, 2),
        "server_cpu_us_per_delivery": round(cpu * 1e6 / max(1, received["delivered"]), 1),
    }


# -- the command ------------------------------------------------------------------------


def _table(result: dict[str, Any]) -> str:
    alone, loaded = result["create_alone"], result["create_with_streams"]
    lag, loop, quiet = result["delivery_lag"], result["loop_lag"], result["loop_lag_alone"]
    return "\n".join(
        [
            f"{result['opened']}/{result['streams']} streams ({result['scope']}), "
            f"{result['published']} changes published",
            f"CreateOrder alone        p50 {alone['p50_ms']} ms  p99 {alone['p99_ms']} ms  "
            f"max {alone['max_ms']} ms",
            f"CreateOrder with streams p50 {loaded['p50_ms']} ms  p99 {loaded['p99_ms']} ms  "
            f"max {loaded['max_ms']} ms",
            f"Health.Check alone       p50 {result['health_alone']['p50_ms']} ms  "
            f"p99 {result['health_alone']['p99_ms']} ms  max {result['health_alone']['max_ms']} ms",
            f"Health.Check w/ streams  p50 {result['health_with_streams']['p50_ms']} ms  "
            f"p99 {result['health_with_streams']['p99_ms']} ms  "
            f"max {result['health_with_streams']['max_ms']} ms",
            f"gRPC loop lag alone      p50 {quiet['p50_ms']} ms  p99 {quiet['p99_ms']} ms  "
            f"max {quiet['max_ms']} ms",
            f"gRPC loop lag w/ streams p50 {loop['p50_ms']} ms  p99 {loop['p99_ms']} ms  "
            f"max {loop['max_ms']} ms",
            f"deliveries {result['deliveries']} ({result['deliveries_per_s']}/s), "
            f"lag p50 {lag['p50_ms']} ms p99 {lag['p99_ms']} ms; missed {result['missed']}, "
            f"duplicated {result['duplicated']}, reconnects {result['reconnects']}",
            f"GC pauses alone {result['gc_alone']}",
            f"GC pauses w/ streams {result['gc_with_streams']}",
            f"server CPU {result['server_cpu_per_s']} s/s, "
            f"{result['server_cpu_us_per_delivery']} us per delivery",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--streams", type=int, default=1000, help="WatchOrders streams")
    parser.add_argument("--channels", type=int, default=10, help="connections they share")
    parser.add_argument("--scope", choices=["all", "users"], default="users")
    parser.add_argument("--users", type=int, default=5, help="users the changes belong to")
    parser.add_argument("--rate", type=float, default=8.0, help="changes published per second")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase")
    parser.add_argument("--interval", type=float, default=0.05, help="pause between probes, s")
    parser.add_argument("--max-backlog", type=int, default=1000, help="ORDER_WATCH_MAX_BACKLOG")
    parser.add_argument(
        "--max-writing", type=int, default=None, help="streams writing at once (WriteTurns)"
    )
    parser.add_argument("--drain", type=float, default=5.0, help="wait for late deliveries, s")
    args = parser.parse_args()
    result = run(args)
    print(_table(result))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
