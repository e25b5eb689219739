"""`/orders/<id>`: one order's saga as a waterfall across services and topics.

Each step both services journaled (GetOrderTimeline of each), in time order, with the gap
since the step before and, for an applied event, the time from its production to its
application; the money moved (the Payment API's transactions of the order); the saga
deadline of an order not ended yet. `/orders/<id>/events` looks again every second and
pushes the waterfall whenever it changed (a refund can follow the end).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from paysaga.admin.v1 import admin_pb2
from paysaga.v1 import orders_pb2
from services.cli.render import duration
from services.console import gateway
from services.console.gateway import ServiceDown
from services.console.present import moment
from services.console.sse import changed_fragments, events
from services.console.web import Problem, call, console, fragment, problem, render

#: Services and topics in the order an order crosses them: the waterfall's swimlanes.
LANES = ["order", "orders", "payment", "payments", "transactions"]
_ID = re.compile(r"^[0-9A-Za-z-]{1,64}$")


@dataclass
class StepRow:
    """One step as the waterfall draws it."""

    step: admin_pb2.Step
    gap: str
    latency: str
    lane: str
    #: Where the step starts and how wide it is, in % of the saga's whole time.
    left: float
    width: float
    trace_id: str


def _rows(steps: list[admin_pb2.Step]) -> list[StepRow]:
    times = [moment(s.time) for s in steps]
    known = [t for t in times if t is not None]
    start = min(known) if known else None
    total = max(0.001, (max(known) - start).total_seconds()) if start and known else 1.0
    rows: list[StepRow] = []
    previous: datetime | None = None
    for step, at in zip(steps, times, strict=True):
        produced = moment(step.produced_time)
        applied = step.kind == admin_pb2.STEP_KIND_APPLIED
        begin = produced if applied and produced and start and produced >= start else at
        offset = (begin - start).total_seconds() if begin and start else 0.0
        span = (at - begin).total_seconds() if at and begin else 0.0
        rows.append(
            StepRow(
                step=step,
                gap=_duration(previous, at),
                latency=_duration(produced, at) if applied else "",
                lane=step.service if not step.topic or applied else step.topic,
                left=round(100 * offset / total, 2),
                width=round(max(0.6, 100 * span / total), 2),
                # Only if the admin API carries one (a Step field named trace_id).
                trace_id=str(getattr(step, "trace_id", "") or ""),
            )
        )
        previous = at or previous
    return rows


def _duration(first: datetime | None, second: datetime | None) -> str:
    if first is None or second is None:
        return ""
    return duration((second - first).total_seconds())


def _gather(request: Request, order_id: str) -> dict[str, Any]:
    """Everything the page shows of one order; a service that is down is named, not fatal."""
    client = console(request).client
    problems: list[Problem] = []
    order: orders_pb2.Order | None = None
    try:
        order = gateway.get_order(client, order_id)
    except (ServiceDown, grpc.RpcError) as exc:
        problems.append(problem(exc, "order"))
    found = gateway.timeline(client, order_id)
    for service, why in found.missing.items():
        problems.append(problem(ServiceDown(service, why)))
    money: list[Any] = []
    try:
        money = gateway.transactions(client, order_id)
    except (ServiceDown, grpc.RpcError) as exc:
        problems.append(problem(exc, "payment"))
    deadline = None
    if order is not None:
        try:
            deadline = gateway.deadline(client, order, datetime.now(UTC))
        except (ServiceDown, grpc.RpcError):
            pass  # the order itself was read: its deadline is only a detail
    return {
        "order_id": order_id,
        "order": order,
        "timeline": found,
        "rows": _rows(found.steps),
        "lanes": LANES,
        "money": money,
        "deadline": deadline,
        "problems": problems,
        "ended": order is not None and order.status != orders_pb2.ORDER_STATUS_CREATED,
    }


async def page(request: Request) -> Response:
    order_id = request.path_params["order_id"]
    if not _ID.match(order_id):
        return render(request, "order.html", {"order_id": order_id, "bad_id": True}, 400)
    context = await call(_gather, request, order_id)
    known = context["order"] is not None or context["timeline"].steps
    status = 200 if known else (503 if context["problems"] else 404)
    return render(request, "order.html", context, status)


async def stream(request: Request) -> Response:
    order_id = request.path_params["order_id"]
    parts = console(request)

    async def waterfall() -> str:
        if not _ID.match(order_id):
            return ""
        context = await call(_gather, request, order_id)
        return fragment(request, "_order_detail.html", {**context, "settings": parts.settings})

    return events(changed_fragments(waterfall), 1.0, parts.stopping)


routes = [Route("/orders/{order_id}", page), Route("/orders/{order_id}/events", stream)]
