"""`/`: the live flow. Counts per lane and per outcome over the last minute, summed on the
server (services.console.flow) and pushed once a second to `/flow/events`."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.console.sse import Event, events
from services.console.web import console, render


async def page(request: Request) -> Response:
    summary = console(request).hub.flow_summary(time.time())
    return render(request, "flow.html", {"summary": summary})


async def stream(request: Request) -> Response:
    parts = console(request)

    async def produce() -> list[Event]:
        return [("flow", parts.hub.flow_summary(time.time()))]

    return events(produce, 1.0, parts.stopping)


routes = [Route("/", page), Route("/flow/events", stream)]
