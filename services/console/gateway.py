"""The console's calls to the services, through the `paysaga` command's client layer
(services/cli: addresses, TLS, token): every read a page needs, and the redrive.

Each function blocks (sync gRPC): the pages call them in a worker thread. A service none of
whose replicas answers raises `ServiceDown`, which the pages show as what is down and what
to run, never as a blank page. An answer that is an error of the call itself (NOT_FOUND,
INVALID_ARGUMENT, FAILED_PRECONDITION) is raised as the grpc.RpcError it is.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import grpc

from paysaga.admin.v1 import admin_pb2, admin_pb2_grpc
from paysaga.v1 import orders_pb2, orders_pb2_grpc, payments_pb2, payments_pb2_grpc
from services.cli.client import Client, CommandError, explain
from services.cli.render import to_dict, when
from services.cli.targets import CONSUMER_OF, ENV, SERVICES

T = TypeVar("T")

_UNREACHABLE = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


class ServiceDown(Exception):
    """No replica of `service` answered; `problem` says which addresses and how."""

    def __init__(self, service: str, problem: str) -> None:
        super().__init__(problem)
        self.service = service
        self.problem = problem

    @property
    def remedy(self) -> str:
        return (
            f"Start it with `make up` (`make ps` shows what runs), or tell the console where "
            f"its replicas are: {ENV[self.service]}=HOST:PORT[,HOST:PORT] "
            f"(or `paysaga --{self.service} HOST:PORT console`)."
        )


def first(client: Client, service: str, call: Callable[[grpc.Channel], T]) -> T:
    """`call` on the channel of the first replica of `service` that answers."""
    problems = []
    for address in client.targets.of(service):
        try:
            return call(client.channel(address))
        except grpc.RpcError as exc:
            if exc.code() not in _UNREACHABLE:  # type: ignore[attr-defined]
                raise
            problems.append(explain(exc, service, address))
    raise ServiceDown(service, "; ".join(problems))


def admin(client: Client, service: str, call: Callable[[admin_pb2_grpc.AdminServiceStub], T]) -> T:
    """`call` on the admin API of the first replica of `service` that answers."""
    try:
        return client.first(service, call)
    except CommandError as exc:
        raise ServiceDown(service, str(exc)) from exc


# -- orders ------------------------------------------------------------------------------


def list_orders(
    client: Client, *, user_id: int, status: int, page_token: str, page_size: int
) -> orders_pb2.ListOrdersResponse:
    request = orders_pb2.ListOrdersRequest(
        user_id=user_id,
        status=orders_pb2.OrderStatus.ValueType(status),
        page_token=page_token,
        page_size=page_size,
    )
    return first(
        client,
        "order",
        lambda ch: orders_pb2_grpc.OrderServiceStub(ch).ListOrders(
            request, timeout=client.timeout_s
        ),
    )


def get_order(client: Client, order_id: str) -> orders_pb2.Order | None:
    request = orders_pb2.GetOrderRequest(order_id=order_id)
    try:
        return first(
            client,
            "order",
            lambda ch: (
                orders_pb2_grpc.OrderServiceStub(ch)
                .GetOrder(request, timeout=client.timeout_s)
                .order
            ),
        )
    except grpc.RpcError as exc:
        if exc.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT):  # type: ignore[attr-defined]
            return None
        raise


@dataclass
class Timeline:
    """What both services recorded of one order, merged in time order."""

    steps: list[admin_pb2.Step]
    status: str = ""
    failure_reason: str = ""
    #: service -> why its part is missing (down), for the page to say so.
    missing: dict[str, str] = field(default_factory=dict)


def timeline(client: Client, order_id: str) -> Timeline:
    request = admin_pb2.GetOrderTimelineRequest(order_id=order_id)
    found = Timeline(steps=[])
    for service in SERVICES:
        try:
            answer = admin(
                client, service, lambda s: s.GetOrderTimeline(request, timeout=client.timeout_s)
            )
        except ServiceDown as exc:
            found.missing[service] = exc.problem
            continue
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                raise
            continue
        found.steps.extend(answer.steps)
        if service == "order":
            found.status, found.failure_reason = answer.status, answer.failure_reason
    found.steps.sort(key=lambda s: (s.time.seconds, s.time.nanos))
    return found


def transactions(client: Client, order_id: str) -> list[payments_pb2.Transaction]:
    """The money moved for an order: its CHARGE and REFUND, if any."""
    request = payments_pb2.ListTransactionsRequest(order_id=order_id, page_size=10)
    return list(
        first(
            client,
            "payment",
            lambda ch: payments_pb2_grpc.PaymentServiceStub(ch).ListTransactions(
                request, timeout=client.timeout_s
            ),
        ).transactions
    )


def deadline(client: Client, order: orders_pb2.Order, now: datetime) -> datetime | None:
    """When the saga deadline fails a CREATED order (None: ended, or not found among the
    oldest 1000 orders not terminal)."""
    created = when(order.create_time)
    if order.status != orders_pb2.ORDER_STATUS_CREATED or created is None:
        return None
    age = max(0.001, (now - created).total_seconds() - 1.0)
    request = admin_pb2.ListStuckOrdersRequest(older_than_seconds=age, limit=1000)
    answer = admin(client, "order", lambda s: s.ListStuckOrders(request, timeout=client.timeout_s))
    for stuck in answer.orders:
        if stuck.order_id == order.id:
            return when(stuck.deadline_time)
    return None


def stuck(client: Client, older_than_s: float, limit: int) -> list[admin_pb2.StuckOrder]:
    request = admin_pb2.ListStuckOrdersRequest(older_than_seconds=older_than_s, limit=limit)
    answer = admin(client, "order", lambda s: s.ListStuckOrders(request, timeout=client.timeout_s))
    return list(answer.orders)


# -- dead letters ------------------------------------------------------------------------


@dataclass
class DeadLetters:
    letters: list[admin_pb2.DeadLetter]
    missing: dict[str, str] = field(default_factory=dict)


def dead_letters(client: Client, *, topic: str, since: datetime | None, limit: int) -> DeadLetters:
    """Dead letters of both services (or of `topic`'s consumer), newest first."""
    request = admin_pb2.ListDeadLettersRequest(topic=topic, limit=limit)
    if since is not None:
        request.since.FromDatetime(since)
    found = DeadLetters(letters=[])
    for service in [CONSUMER_OF[topic]] if topic else SERVICES:
        try:
            answer = admin(
                client, service, lambda s: s.ListDeadLetters(request, timeout=client.timeout_s)
            )
        except ServiceDown as exc:
            found.missing[service] = exc.problem
            continue
        found.letters.extend(answer.dead_letters)
    found.letters.sort(
        key=lambda d: (d.dead_letter_time.seconds, d.dead_letter_time.nanos), reverse=True
    )
    return found


def owner(dead_letter_id: str) -> str | None:
    """The service holding a dead letter (its topic's consumer), or None for a bad id."""
    topic = dead_letter_id.split(":", 1)[0]
    if topic not in CONSUMER_OF or dead_letter_id.count(":") != 2:
        return None
    return CONSUMER_OF[topic]


def dead_letter(
    client: Client, service: str, dead_letter_id: str
) -> admin_pb2.GetDeadLetterResponse:
    request = admin_pb2.GetDeadLetterRequest(id=dead_letter_id)
    return admin(client, service, lambda s: s.GetDeadLetter(request, timeout=client.timeout_s))


def redrive(
    client: Client,
    service: str,
    *,
    ids: list[str],
    topic: str,
    requested_by: str,
    dry_run: bool = False,
) -> admin_pb2.RedriveDeadLettersResponse:
    """Send dead letters back (named ids, or with `topic` and no ids: all of that topic
    not redriven yet); the service records `requested_by` with each. With `dry_run`
    nothing is sent or recorded: the answer says what would be, in the order it would."""
    request = admin_pb2.RedriveDeadLettersRequest(
        ids=ids, all=not ids, topic=topic, requested_by=requested_by, dry_run=dry_run
    )
    return admin(client, service, lambda s: s.RedriveDeadLetters(request, timeout=client.timeout_s))


# -- replicas ----------------------------------------------------------------------------


def replica_status(client: Client, service: str, address: str) -> dict[str, Any]:
    """One replica's GetStatus as a dict, with its health per name; or why it is unreachable."""
    try:
        answer = client.admin(address).GetStatus(
            admin_pb2.GetStatusRequest(), timeout=client.timeout_s
        )
    except grpc.RpcError as exc:
        return {"service": service, "address": address, "error": explain(exc, service, address)}
    found = to_dict(answer)
    names = list(answer.health_names) or [""]
    found.update(
        service=service,
        address=address,
        health={name or "(server)": client.health(address, name) for name in names},
    )
    return found


def all_replicas(client: Client, pool: ThreadPoolExecutor) -> list[dict[str, Any]]:
    """Every replica of both services, asked at once (one frozen replica costs one timeout)."""
    asks = [(s, a) for s in SERVICES for a in client.targets.of(s)]
    return list(pool.map(lambda ask: replica_status(client, *ask), asks))
