"""`/replicas`: every replica of both services, from the hub's look at each every
PAYSAGA_CONSOLE_STATUS_POLL_S: health per name, outbox pending and parked, consumer lag per
partition, the last batch, and what is not progressing; an unreachable replica says so and
what to run. Pushed to `/replicas/events` whenever it changes."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from services.console.sse import changed_fragments, events
from services.console.web import console, fragment, render


def _view(replica: dict[str, Any]) -> dict[str, Any]:
    """One replica as the page shows it."""
    if "error" in replica:
        return {**replica, "state": "unreachable"}
    health = replica.get("health", {})
    serving = all(v == "SERVING" for v in health.values())
    problems = list(replica.get("problems", []))
    last = replica.get("last_batch_time")
    lag = [p for p in replica.get("lag", []) if p.get("assigned_here")]
    return {
        **replica,
        "state": "serving" if serving and not problems else "degraded",
        "not_serving": {k: v for k, v in health.items() if v != "SERVING"},
        "problems": problems,
        "last_batch": datetime.fromisoformat(last.replace("Z", "+00:00")) if last else None,
        "held_lag": lag,
        "lag_total": sum(int(p.get("lag", 0)) for p in replica.get("lag", [])),
        "dead_total": sum(int(t.get("count", 0)) for t in replica.get("dead_letters", [])),
    }


def _context(request: Request) -> dict[str, Any]:
    hub = console(request).hub
    seen = hub.replicas_at
    return {
        "replicas": [_view(r) for r in hub.replicas],
        "seen_at": datetime.fromtimestamp(seen, UTC) if seen else None,
        "targets": console(request).client.targets,
    }


async def page(request: Request) -> Response:
    context = _context(request)
    unreachable = any(r["state"] == "unreachable" for r in context["replicas"])
    return render(request, "replicas.html", context, 503 if unreachable else 200)


async def stream(request: Request) -> Response:
    parts = console(request)

    async def table() -> str:
        return fragment(request, "_replicas.html", _context(request))

    return events(changed_fragments(table), parts.settings.status_poll_s / 2, parts.stopping)


routes = [Route("/replicas", page), Route("/replicas/events", stream)]
