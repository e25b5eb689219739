"""The system under test: a private deploy.stack.Stack in a temp dir, or a running stack."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import create_engine, text

from deploy.stack.cli import found_processes
from deploy.stack.config import DEFAULT_LAYOUT, Layout, free_ports
from deploy.stack.datastores import DbKind
from deploy.stack.processes import is_serving
from deploy.stack.stack import Stack as ServiceStack


@dataclass
class Stack:
    """Where the services and the broker listen, and the pids whose CPU we account."""

    #: Every Order replica's address, replica 0 first: the load is balanced over all of them.
    order_addresses: list[str]
    payment_address: str
    bootstrap: str
    pids: dict[str, int] = field(default_factory=dict)
    #: Process name -> host:port of its /metrics (a private stack's services; see bench.waits).
    metrics_addresses: dict[str, str] = field(default_factory=dict)
    home: Path | None = None
    private: bool = True
    #: The layout, as `make bench` variables (DB=... REPLICAS=... BROKERS=...), or "running".
    shape: str = "running"


def free_port() -> int:
    return free_ports(1)[0]


#: Balance given to users 1..5 of a private stack, so that orders complete (recording a
#: transaction: the full saga) rather than fail once the seeded balances run out.
BENCH_BALANCE_CENTS = 10**15


def fund_users(payment_url: str) -> None:
    """Top up the seeded users in the Payment service's database (a private stack only)."""
    engine = create_engine(payment_url)
    try:
        with engine.begin() as connection:
            connection.execute(
                text("UPDATE account SET balance_cents = :cents"), {"cents": BENCH_BALANCE_CENTS}
            )
    finally:
        engine.dispose()
    print(f"[stack] users 1..5 funded with {BENCH_BALANCE_CENTS // 100:,} each", flush=True)


@contextmanager
def private_stack(
    keep: bool = False,
    *,
    db: DbKind = "sqlite",
    replicas: int = 1,
    brokers: int = 1,
    roles: Layout = DEFAULT_LAYOUT,
    metrics: bool = True,
) -> Iterator[Stack]:
    """Start Kafka, the database and the services (all fresh) in a temp dir; stop them after.

    `metrics=False` runs the services with their metrics off (nothing recorded or served).
    """
    home = Path(tempfile.mkdtemp(prefix="paysaga-bench-"))
    home.chmod(0o755)  # under root PostgreSQL runs as another account: it must reach its data
    print(
        f"[stack] private stack in {home}: DB={db}, {replicas} replica(s), {brokers} "
        f"broker(s), ROLES={roles}, metrics {'on' if metrics else 'off'}"
    )
    services = ServiceStack(
        home,
        db=db,
        replicas=replicas,
        brokers=brokers,
        roles=roles,
        ports="free",
        detach=False,
        metrics=metrics,
    )
    try:
        services.start()
        fund_users(services.database_urls["payment"])
        pids = services.pids()
        for proc in services.all_processes():
            print(f"[stack] {proc.name} SERVING on {proc.address} (pid {pids.get(proc.name)})")
        print(f"[stack] Kafka at {services.bootstrap}", flush=True)
        yield Stack(
            order_addresses=services.addresses("order"),
            payment_address=services.payment_address,
            bootstrap=services.bootstrap,
            pids=pids,
            metrics_addresses={
                proc.name: proc.metrics_address or "0" for proc in services.all_processes()
            },
            home=home,
            shape=f"DB={db} REPLICAS={replicas} BROKERS={brokers} ROLES={roles}",
        )
    finally:
        services.stop()
        print("[stack] services, Kafka and databases stopped", flush=True)
        if keep:
            print(f"[stack] kept {home} (logs, databases)", flush=True)
        else:
            shutil.rmtree(home, ignore_errors=True)


def running_order_addresses() -> list[str]:
    """Every Order process of `make up` that serves the API and left a live pid file (var/run),
    replica 0 first (a worker process answers the public API with UNIMPLEMENTED)."""
    return [
        p.address for p in found_processes() if p.spec.name == "order" and p.serves_api and p.pid()
    ]


@contextmanager
def running_stack(
    order_addresses: list[str], payment_address: str, bootstrap: str
) -> Iterator[Stack]:
    """A stack someone else runs; CPU is accounted if `make up` pid files (var/run) are there."""
    for address in order_addresses:
        if not is_serving(address):
            raise SystemExit(f"error: no SERVING Order service at {address}")
    pids = {proc.name: pid for proc in found_processes() if (pid := proc.pid()) is not None}
    kafka_pid = Path("var/run/kafka.pid")
    if kafka_pid.exists() and kafka_pid.read_text().strip().isdigit():
        pids["kafka"] = int(kafka_pid.read_text().strip())
    orders = ", ".join(order_addresses)
    print(f"[stack] using running stack: order {orders}, Kafka {bootstrap}", flush=True)
    yield Stack(order_addresses, payment_address, bootstrap, pids=pids, private=False)


def default_addresses() -> tuple[str, str, str]:
    """Order address, Payment address and bootstrap servers from the environment (or defaults)."""
    return (
        os.environ.get("ORDER_GRPC_ADDRESS", "127.0.0.1:50051"),
        os.environ.get("PAYMENT_GRPC_ADDRESS", "127.0.0.1:50052"),
        os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
