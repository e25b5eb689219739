"""Where the services are: addresses from flags, the environment or the defaults.

`--order` / `--payment` take comma-separated addresses (PAYSAGA_ORDER_ADDRESSES /
PAYSAGA_PAYMENT_ADDRESSES otherwise, else 127.0.0.1:50051 / 127.0.0.1:50052).
`--replicas N` adds the replicas `make up REPLICAS=N` starts: replica i listens on the
first address's port + 100*i. `--roles split` adds the worker process `make up ROLES=split`
runs beside each replica's api process, on its port + 10 (the commands call the admin API,
which both roles serve); without `--roles` and without addresses given, the layout the
running `make up` stack wrote in var/run/stack.json (in the directory the command runs
in), else `all`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

SERVICES = ("order", "payment")
DEFAULTS = {"order": "127.0.0.1:50051", "payment": "127.0.0.1:50052"}
ENV = {"order": "PAYSAGA_ORDER_ADDRESSES", "payment": "PAYSAGA_PAYMENT_ADDRESSES"}

#: How far a replica's worker process's port is from its api process's (`ROLES=split`).
WORKER_PORT_OFFSET = 10
#: The layouts `make up ROLES=...` starts.
LAYOUTS = ("all", "split")

#: Where `make up` records the stack it started (deploy/stack), relative to the project.
STACK_STATE = Path("var/run/stack.json")

#: Which service consumes each saga topic, so holds its dead letters.
CONSUMER_OF = {"orders": "payment", "payments": "payment", "transactions": "order"}


class BadAddress(ValueError):
    """An address the command cannot use."""


@dataclass(frozen=True)
class Targets:
    order: list[str]
    payment: list[str]

    def of(self, service: str) -> list[str]:
        return self.order if service == "order" else self.payment


def _split(text: str) -> list[str]:
    addresses = [a.strip() for a in text.split(",") if a.strip()]
    for address in addresses:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise BadAddress(f"{address!r} is not HOST:PORT (e.g. 127.0.0.1:50051)")
    if not addresses:
        raise BadAddress("no address given")
    return addresses


def _with_replicas(addresses: list[str], replicas: int, roles: str) -> list[str]:
    host, _, port = addresses[0].rpartition(":")
    more = [f"{host}:{int(port) + 100 * i}" for i in range(1, replicas)]
    found = [*addresses, *(a for a in more if a not in addresses)]
    if roles == "split":
        workers = []
        for address in found:
            host, _, port = address.rpartition(":")
            workers.append(f"{host}:{int(port) + WORKER_PORT_OFFSET}")
        found += [a for a in workers if a not in found]
    return found


def running_layout(state: Path = STACK_STATE) -> str:
    """The layout of the stack `make up` runs from this directory, `all` if none is known."""
    try:
        roles = json.loads(state.read_text()).get("roles")
    except (OSError, ValueError, AttributeError):
        return "all"
    return roles if roles in LAYOUTS else "all"


def resolve(
    order: str | None, payment: str | None, replicas: int = 1, roles: str | None = None
) -> Targets:
    """The addresses to call, from the flags, the environment, then the defaults (in the
    layout of the stack `make up` runs here, unless `roles` says which)."""
    if replicas < 1:
        raise BadAddress("--replicas must be 1 or more")
    if roles is not None and roles not in LAYOUTS:
        raise BadAddress(f"--roles {roles}: choose all or split")
    given = {"order": order, "payment": payment}
    found = {}
    for service in SERVICES:
        listed = given[service] or os.environ.get(ENV[service])
        # Addresses given are taken as they are; the defaults are make up's, in its layout.
        layout = roles or ("all" if listed else running_layout())
        found[service] = _with_replicas(_split(listed or DEFAULTS[service]), replicas, layout)
    return Targets(order=found["order"], payment=found["payment"])
