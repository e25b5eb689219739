"""The system under test: a private broker and both services as processes, or a running stack."""

from __future__ import annotations

import os
import shutil
import socket
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from deploy.kafka.runtime import KafkaRuntime
from deploy.stack import SERVICES, ServiceProcess, default_processes, is_serving


@dataclass
class Stack:
    """Where the services and the broker listen, and the pids whose CPU we account."""

    order_address: str
    payment_address: str
    bootstrap: str
    pids: dict[str, int] = field(default_factory=dict)
    home: Path | None = None
    private: bool = True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


#: Balance given to users 1..5 of a private stack, so that orders complete (recording a
#: transaction: the full saga) rather than fail once the seeded balances run out.
BENCH_BALANCE_CENTS = 10**15


def fund_users(payment_db: Path) -> None:
    """Top up the seeded users in the Payment service's database (a private stack only)."""
    with sqlite3.connect(payment_db, timeout=30) as connection:
        connection.execute("UPDATE account SET balance_cents = ?", (BENCH_BALANCE_CENTS,))
    print(f"[stack] users 1..5 funded with {BENCH_BALANCE_CENTS // 100:,} each", flush=True)


@contextmanager
def private_stack(keep: bool = False) -> Iterator[Stack]:
    """Start a broker and both services (fresh SQLite files) in a temp dir; stop them after."""
    home = Path(tempfile.mkdtemp(prefix="paysaga-bench-"))
    print(f"[stack] private stack in {home}", flush=True)
    broker = KafkaRuntime(
        port=free_port(),
        controller_port=free_port(),
        data_dir=home / "kafka",
        run_dir=home / "run",
        log_file=home / "log" / "kafka.log",
        detach=False,
    )
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "ORDER_DATABASE_URL": f"sqlite:///{home}/order.db",
        "PAYMENT_DATABASE_URL": f"sqlite:///{home}/payment.db",
    }
    processes = {
        spec.name: ServiceProcess(
            spec, f"127.0.0.1:{free_port()}", env, run_dir=home / "run", log_dir=home / "log"
        )
        for spec in SERVICES
    }
    try:
        broker_pid = broker.start()
        broker.create_topics()
        print(f"[stack] Kafka up at {broker.bootstrap_servers} (pid {broker_pid})", flush=True)
        for proc in processes.values():
            proc.start()
        for proc in processes.values():
            proc.wait_serving()
        fund_users(home / "payment.db")
        pids = {name: proc.pid() or 0 for name, proc in processes.items()}
        for name, proc in processes.items():
            print(f"[stack] {name} SERVING on {proc.address} (pid {pids[name]})", flush=True)
        yield Stack(
            order_address=processes["order"].address,
            payment_address=processes["payment"].address,
            bootstrap=broker.bootstrap_servers,
            pids={**pids, "kafka": broker_pid},
            home=home,
        )
    finally:
        for proc in processes.values():
            proc.stop()
        broker.stop()
        print("[stack] services and broker stopped", flush=True)
        if keep:
            print(f"[stack] kept {home} (logs, databases)", flush=True)
        else:
            shutil.rmtree(home, ignore_errors=True)


@contextmanager
def running_stack(order_address: str, payment_address: str, bootstrap: str) -> Iterator[Stack]:
    """A stack someone else runs; CPU is accounted if `make up` pid files (var/run) are there."""
    if not is_serving(order_address):
        raise SystemExit(f"error: no SERVING Order service at {order_address}")
    pids: dict[str, int] = {}
    for proc in default_processes():
        pid = proc.pid()
        if pid is not None:
            pids[proc.spec.name] = pid
    kafka_pid = Path("var/run/kafka.pid")
    if kafka_pid.exists() and kafka_pid.read_text().strip().isdigit():
        pids["kafka"] = int(kafka_pid.read_text().strip())
    print(f"[stack] using running stack: order {order_address}, Kafka {bootstrap}", flush=True)
    yield Stack(order_address, payment_address, bootstrap, pids=pids, private=False)


def default_addresses() -> tuple[str, str, str]:
    """Order address, Payment address and bootstrap servers from the environment (or defaults)."""
    return (
        os.environ.get("ORDER_GRPC_ADDRESS", "127.0.0.1:50051"),
        os.environ.get("PAYMENT_GRPC_ADDRESS", "127.0.0.1:50052"),
        os.environ.get("KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"),
    )
