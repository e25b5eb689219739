"""Where the services are: addresses from flags, the environment or the defaults.

`--order` / `--payment` take comma-separated addresses (PAYSAGA_ORDER_ADDRESSES /
PAYSAGA_PAYMENT_ADDRESSES otherwise, else 127.0.0.1:50051 / 127.0.0.1:50052).
`--replicas N` adds the replicas `make up REPLICAS=N` starts: replica i listens on the
first address's port + 100*i. `--roles split` adds the worker process `make up ROLES=split`
runs beside each replica's api process, on its port + 10 (the commands call the admin API,
which both roles serve).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

SERVICES = ("order", "payment")
DEFAULTS = {"order": "127.0.0.1:50051", "payment": "127.0.0.1:50052"}
ENV = {"order": "PAYSAGA_ORDER_ADDRESSES", "payment": "PAYSAGA_PAYMENT_ADDRESSES"}

#: How far a replica's worker process's port is from its api process's (`ROLES=split`).
WORKER_PORT_OFFSET = 10
#: The layouts `make up ROLES=...` starts.
LAYOUTS = ("all", "split")

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


def resolve(
    order: str | None, payment: str | None, replicas: int = 1, roles: str = "all"
) -> Targets:
    """The addresses to call, from the flags, the environment, then the defaults."""
    if replicas < 1:
        raise BadAddress("--replicas must be 1 or more")
    if roles not in LAYOUTS:
        raise BadAddress(f"--roles {roles}: choose all or split")
    given = {"order": order, "payment": payment}
    found = {
        service: _with_replicas(
            _split(given[service] or os.environ.get(ENV[service]) or DEFAULTS[service]),
            replicas,
            roles,
        )
        for service in SERVICES
    }
    return Targets(order=found["order"], payment=found["payment"])
