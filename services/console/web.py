"""What every page uses: the console's parts on the app state, rendering with the layout,
calls to the services off the event loop, and their failures shown as what to do."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import grpc
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.templating import Jinja2Templates

from services.cli.client import Client
from services.console.gateway import ServiceDown
from services.console.guard import Login, Session, Sessions
from services.console.hub import Hub
from services.console.present import FILTERS
from services.console.settings import ConsoleSettings

T = TypeVar("T")
HERE = Path(__file__).parent
#: The pages in the navigation, in order: (path, label).
NAVIGATION = [
    ("/", "Live flow"),
    ("/orders", "Orders"),
    ("/stuck", "Stuck and held"),
    ("/dead-letters", "Dead letters"),
    ("/replicas", "Replicas"),
]


@dataclass
class Console:
    """The parts of one console process, on `app.state.console`."""

    settings: ConsoleSettings
    client: Client
    hub: Hub
    sessions: Sessions
    login: Login
    #: Whether the console itself serves HTTPS (cookies are then Secure).
    https: bool
    stopping: asyncio.Event


def templates() -> Jinja2Templates:
    found = Jinja2Templates(directory=str(HERE / "templates"))
    found.env.filters.update(FILTERS)
    found.env.globals["navigation"] = NAVIGATION
    return found


def console(request: Request) -> Console:
    found: Console = request.app.state.console
    return found


def session_of(request: Request) -> Session:
    """The request's session (the guard gives every request one)."""
    found: Session = request.scope["state"]["session"]
    return found


def render(
    request: Request, name: str, context: dict[str, Any] | None = None, status: int = 200
) -> HTMLResponse:
    """A page (or fragment) with what every page needs: session, CSRF token, time now."""
    parts = console(request)
    session = session_of(request)
    base = {
        "request": request,
        "session": session,
        "csrf": session.csrf,
        "auth": parts.login.enabled,
        "now": datetime.now(UTC),
        "path": request.url.path,
        "settings": parts.settings,
    }
    page: HTMLResponse = request.app.state.templates.TemplateResponse(
        request, name, {**base, **(context or {})}, status_code=status
    )
    return page


def fragment(request: Request, name: str, context: dict[str, Any]) -> str:
    """A template rendered to text, for a server-sent event."""
    template = request.app.state.templates.get_template(name)
    return str(template.render({"now": datetime.now(UTC), "request": request, **context}))


async def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking call to the services in a worker thread."""
    return await run_in_threadpool(function, *args, **kwargs)


@dataclass(frozen=True)
class Problem:
    """A service that failed a page, in words: what happened, and what to do."""

    service: str
    what: str
    remedy: str


def problem(error: Exception, service: str = "") -> Problem:
    """A ServiceDown, a refused call or a refused token, as the page says it."""
    if isinstance(error, ServiceDown):
        return Problem(
            error.service,
            f"The {error.service} service does not answer: {error.problem}",
            error.remedy,
        )
    if isinstance(error, grpc.RpcError):
        code = error.code()  # type: ignore[attr-defined]
        details = error.details() or code.name  # type: ignore[attr-defined]
        remedy = ""
        if code in (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED):
            remedy = (
                "The console calls the services with PAYSAGA_TOKEN: give it an operator's "
                "token (`make -s token OPERATOR=1`) and restart it."
            )
        name = service or "a"
        return Problem(service, f"The {name} service refused ({code.name}): {details}", remedy)
    return Problem(service, str(error), "")
