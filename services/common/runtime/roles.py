"""Which part of a service one process runs: `api`, `worker`, or `all` of it.

- `api`: the gRPC server with the public API (CreateOrder with its group commit, the
  reads, WatchOrders with its `order-updates` tail), the admin API and health.
- `worker`: the consumer, the outbox relay and the service's background workers (saga
  deadlines, the held-money re-announcer, retention); it serves health and the admin API
  on its own port, never the public API.
- `all` (the default): both in one process.

Chosen by `<SVC>_ROLE` or `python -m services.<svc> serve --role ROLE` (the flag wins). N
api and M worker processes may share one database: an api process wakes the relay of a
worker over the database's wake-up channel (services.common.persistence.wakeup).
"""

from __future__ import annotations

from typing import Literal, cast

Role = Literal["all", "api", "worker"]
ROLES: tuple[Role, ...] = ("all", "api", "worker")


class BadRole(ValueError):
    """A role that is none of ROLES; the message names the setting and the choices."""


def check_role(role: str, setting: str = "<SVC>_ROLE") -> Role:
    """`role` as a Role, or BadRole saying what to set `setting` to."""
    if role not in ROLES:
        raise BadRole(
            f"{setting}={role!r} is not a role: choose api (the gRPC API), worker (the "
            "consumer, the outbox relay and the background workers) or all (both, one "
            "process: the default)"
        )
    return cast(Role, role)


def serves_api(role: Role) -> bool:
    """Whether a process of `role` serves the public API (and feeds WatchOrders)."""
    return role in ("all", "api")


def runs_workers(role: Role) -> bool:
    """Whether a process of `role` runs the consumer, the relay and the background workers."""
    return role in ("all", "worker")
