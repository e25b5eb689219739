"""`/orders`: orders by user, status and time, newest first, a page at a time; changed and
new orders are pushed live to `/orders/events` (first page only: later pages stay still)."""

from __future__ import annotations

from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from paysaga.v1 import orders_pb2
from services.cli import parse_since
from services.console import gateway
from services.console.gateway import ServiceDown
from services.console.present import STATUSES, moment
from services.console.sse import Event, events
from services.console.web import call, console, fragment, problem, render

PAGE_SIZE = 50
#: Pages of ListOrders read at most to find orders older than a `until` filter.
MAX_SCAN_PAGES = 20


def _filters(request: Request) -> dict[str, Any]:
    """The query's filters, checked; `errors` says what is wrong with any."""
    query = request.query_params
    found: dict[str, Any] = {"user": "", "status": "", "until": "", "errors": []}
    user = query.get("user", "").strip()
    if user:
        if user.isdigit() and int(user) > 0:
            found["user"] = user
        else:
            found["errors"].append(f"user {user!r} is not a user id (a positive number)")
    status = query.get("status", "").strip().upper()
    if status:
        if status in STATUSES:
            found["status"] = status
        else:
            found["errors"].append(f"status {status!r}: choose {', '.join(STATUSES)}")
    until = query.get("until", "").strip()
    if until:
        try:
            found["until_time"] = parse_since(until)
            found["until"] = until
        except Exception:
            found["errors"].append(
                f"created before {until!r}: give a duration ago (1h) or a time "
                "(2026-11-26T09:00:00, UTC)"
            )
    return found


def matches(order: orders_pb2.Order, filters: dict[str, Any]) -> bool:
    """Whether a changed order belongs on a page with these filters."""
    if filters["user"] and order.user_id != int(filters["user"]):
        return False
    return not filters["status"] or order.status == STATUSES[filters["status"]]


def _page(request: Request, filters: dict[str, Any], token: str) -> tuple[list[Any], str]:
    client = console(request).client
    until = filters.get("until_time")
    kept: list[orders_pb2.Order] = []
    for _ in range(MAX_SCAN_PAGES):
        answer = gateway.list_orders(
            client,
            user_id=int(filters["user"] or 0),
            status=STATUSES.get(filters["status"], 0),
            page_token=token,
            page_size=PAGE_SIZE if until is None else 1000,
        )
        token = answer.next_page_token
        for order in answer.orders:
            created = moment(order.create_time)
            if until is None or (created is not None and created <= until):
                kept.append(order)
        if until is None or len(kept) >= PAGE_SIZE or not token:
            break
    return kept[:PAGE_SIZE], token


async def page(request: Request) -> Response:
    filters = _filters(request)
    token = request.query_params.get("page", "")
    context: dict[str, Any] = {"filters": filters, "orders": [], "next": "", "page_token": token}
    if filters["errors"]:
        return render(request, "orders.html", context, status=400)
    try:
        context["orders"], context["next"] = await call(_page, request, filters, token)
    except (ServiceDown, grpc.RpcError) as exc:
        context["problem"] = problem(exc, "order")
        return render(request, "orders.html", context, status=503)
    context["live"] = not token and not filters["until"]
    context["cursor"] = console(request).hub.last_seq
    return render(request, "orders.html", context)


async def stream(request: Request) -> Response:
    parts = console(request)
    filters = _filters(request)
    try:
        seen = [int(request.query_params.get("after", "0"))]
    except ValueError:
        seen = [parts.hub.last_seq]

    async def produce() -> list[Event]:
        seen[0], changed = parts.hub.changes_since(seen[0])
        if not changed:
            return []
        shown = [o for o in changed if matches(o, filters)][-PAGE_SIZE:]
        gone = [o.id for o in changed if not matches(o, filters)]
        rows = fragment(request, "_order_rows.html", {"orders": list(reversed(shown))})
        return [("orders", {"rows": rows, "drop": gone, "count": len(shown)})]

    return events(produce, 1.0, parts.stopping)


routes = [Route("/orders", page), Route("/orders/events", stream)]
