"""`/stuck`: orders still CREATED past a threshold, oldest first, each with the step it
waits for and its deadline (ListStuckOrders); and FAILED orders whose charge has no refund
yet (held money: ListHeldOrders of the Order service, confirmed by the Payment service's, as
`paysaga orders held` does). Pushed again every two seconds."""

from __future__ import annotations

from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.cli import parse_duration
from services.cli.client import CommandError
from services.cli.orders import held_money
from services.console import gateway
from services.console.gateway import ServiceDown
from services.console.sse import changed_fragments, events
from services.console.web import call, console, fragment, problem, render

PAGE_SIZE = 50
#: The most orders asked for (the admin API's limit); the console pages through them.
LIMIT = 1000


def _query(request: Request) -> dict[str, Any]:
    settings = console(request).settings
    query = request.query_params
    found: dict[str, Any] = {"older": query.get("older", ""), "errors": []}
    try:
        found["older_s"] = parse_duration(found["older"]) if found["older"] else None
    except Exception:
        found["errors"].append(f"{found['older']!r} is not a duration: use e.g. 30s, 5m, 2h")
        found["older_s"] = None
    if found["older_s"] is None:
        found["older_s"] = settings.stuck_after_s
    page = query.get("page", "1")
    found["page"] = int(page) if page.isdigit() and int(page) > 0 else 1
    return found


def _gather(request: Request, query: dict[str, Any]) -> dict[str, Any]:
    client = console(request).client
    found: dict[str, Any] = {"query": query, "problems": []}
    try:
        orders = gateway.stuck(client, query["older_s"], LIMIT)
    except (ServiceDown, grpc.RpcError) as exc:
        found["problems"].append(problem(exc, "order"))
        orders = []
    first = (query["page"] - 1) * PAGE_SIZE
    found.update(
        orders=orders[first : first + PAGE_SIZE],
        total=len(orders),
        more=len(orders) > first + PAGE_SIZE,
        at_limit=len(orders) >= LIMIT,
    )
    try:
        found["held"] = held_money(client, query["older_s"], LIMIT)
    except (CommandError, grpc.RpcError) as exc:
        found["problems"].append(problem(_down(exc), "order"))
        found["held"] = None
    return found


def _down(error: Exception) -> Exception:
    return ServiceDown("order", str(error)) if isinstance(error, CommandError) else error


async def page(request: Request) -> Response:
    query = _query(request)
    context = await call(_gather, request, query)
    status = 400 if query["errors"] else (503 if context["problems"] else 200)
    return render(request, "stuck.html", context, status)


async def stream(request: Request) -> Response:
    parts = console(request)
    query = _query(request)

    async def lists() -> str:
        context = await call(_gather, request, query)
        return fragment(request, "_stuck.html", context)

    return events(changed_fragments(lists), 2.0, parts.stopping)


routes = [Route("/stuck", page), Route("/stuck/events", stream)]
