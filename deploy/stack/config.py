"""What a stack is made of: the two services, their addresses per replica, and free ports.

Replica i of a service listens on its base port + PORT_STEP·i and is named after the
service with `-i` appended (replica 0 has the bare name): `order`, `order-1`, ...

Layouts (`make up ROLES=...`): "all", one process per replica doing everything; "split",
two per replica, its api process (the replica's ports and address) and its worker process
(consumer, relay, background workers: services.common.runtime.roles) on the replica's
ports + WORKER_PORT_OFFSET, named `order-0-api`, `order-0-worker`, `order-1-api`, ...
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

ROOT = Path(__file__).resolve().parents[2]
#: Replica i of a service listens on its base port + PORT_STEP·i (as Kafka node j does).
PORT_STEP = 100
#: "default": the services' usual ports (or their env overrides); "free": chosen now.
Ports = Literal["default", "free"]
#: How a replica runs: one process ("all"), or an api and a worker process ("split").
Layout = Literal["all", "split"]
LAYOUTS: tuple[Layout, ...] = ("all", "split")
#: The layout of `make up` and `make bench` unless ROLES says otherwise: on a 2-core machine
#: the split one completes more orders per second at the max and is as fast below it, once
#: the api and worker processes' SQLite writers queue on a lock file (docs/performance.md).
#: The Stack class itself defaults to "all": tests choose their layout explicitly.
DEFAULT_LAYOUT: Layout = "split"
#: A role of one process: the layout "all" runs role "all", "split" runs "api" and "worker".
ROLES_OF: dict[Layout, tuple[str, ...]] = {"all": ("all",), "split": ("api", "worker")}
#: The worker process of a split replica listens (gRPC, metrics) on the replica's ports + this
#: (50061, 9111 for Order replica 0): clear of the next replica (+100), of Kafka (9092/9093
#: + 100·j) and of the console (8088).
WORKER_PORT_OFFSET = 10


class StackConfigError(ValueError):
    """A layout that cannot work (e.g. several replicas on SQLite); the message says why."""


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service: its module, its settings' env prefix, its default addresses."""

    name: str
    module: str
    env_prefix: str
    default_address: str
    default_metrics_address: str

    @property
    def address_env(self) -> str:
        return f"{self.env_prefix}GRPC_ADDRESS"

    @property
    def metrics_env(self) -> str:
        return f"{self.env_prefix}METRICS_ADDRESS"

    @property
    def database_env(self) -> str:
        return f"{self.env_prefix}DATABASE_URL"

    @property
    def instance_env(self) -> str:
        return f"{self.env_prefix}INSTANCE_ID"


SERVICES = (
    ServiceSpec("order", "services.order", "ORDER_", "127.0.0.1:50051", "127.0.0.1:9101"),
    ServiceSpec("payment", "services.payment", "PAYMENT_", "127.0.0.1:50052", "127.0.0.1:9102"),
)
SPECS = {spec.name: spec for spec in SERVICES}
#: The web console (services/console): not a gRPC service, one process, started after them.
CONSOLE = ServiceSpec("console", "services.console", "PAYSAGA_CONSOLE_", "127.0.0.1:8088", "0")


#: Ports free_ports() handed out already: never twice in one process (a stack's services
#: and Kafka nodes choose theirs one after another, each released before it is bound).
_handed_out: set[int] = set()


def free_ports(count: int) -> list[int]:
    """Distinct free loopback ports, none handed out before by this process."""
    socks: list[socket.socket] = []
    try:
        found: list[int] = []
        while len(found) < count:
            sock = socket.socket()
            socks.append(sock)  # held until all are chosen: the OS gives another one each time
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            if port not in _handed_out:
                found.append(port)
                _handed_out.add(port)
        return found
    finally:
        for sock in socks:
            sock.close()


def replica_address(base: str, replica: int, *, offset: int = 0) -> str:
    """`127.0.0.1:50051`, replica 2 -> `127.0.0.1:50251` (an address switched off, "0" or
    empty, stays off); `offset` is added to the port as well."""
    if base.strip() in ("", "0", "off"):
        return "0"
    host, _, port = base.rpartition(":")
    return f"{host}:{int(port) + PORT_STEP * replica + offset}"


def replica_name(service: str, replica: int) -> str:
    """Names replica i's pid file and log: order, order-1, order-2, ..."""
    return service if replica == 0 else f"{service}-{replica}"


def process_name(service: str, replica: int, role: str = "all") -> str:
    """Names one process's pid file and log: replica_name for role "all", else
    `order-0-api`, `order-0-worker`, `order-1-api`, ..."""
    return replica_name(service, replica) if role == "all" else f"{service}-{replica}-{role}"


def role_address(address: str, role: str) -> str:
    """Where a process of `role` listens, given its replica's address (`127.0.0.1:50051`:
    the worker on `127.0.0.1:50061`; an address switched off stays off)."""
    if role != "worker":
        return address
    return replica_address(address, 0, offset=WORKER_PORT_OFFSET)
