"""The console as an ASGI app: `create_app(settings, client, login)` wires the pages, the
static files, the session guard, the security headers and the background hub.

Every response carries a strict Content-Security-Policy: scripts, styles, images and
streams from the console itself only, no inline script or style, no frames, forms posting
only here. Nothing is loaded from elsewhere (no CDN): the one script and the one style
sheet are the console's own, in static/. On loopback the Host header must name loopback
(a page elsewhere cannot reach the console through DNS rebinding).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.cli.client import Client
from services.common.security.tls import is_loopback
from services.console.guard import COOKIE, Login, Sessions
from services.console.hub import Hub
from services.console.pages import dead_letters, flow, login, order, orders, replicas, stuck
from services.console.settings import ConsoleSettings
from services.console.web import HERE, Console, templates

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = [
    ("content-security-policy", CONTENT_SECURITY_POLICY),
    ("x-content-type-options", "nosniff"),
    ("x-frame-options", "DENY"),
    ("referrer-policy", "same-origin"),
    ("cross-origin-opener-policy", "same-origin"),
]
#: Paths anyone may open without logging in.
OPEN_PATHS = ("/login", "/static/", "/healthz")
LOOPBACK_HOSTS = ["127.0.0.1", "localhost", "::1", "[::1]"]


class Guard:
    """Gives every request a session, sends a visitor who must log in to /login, and adds
    the security headers (and the session cookie) to every response."""

    def __init__(self, app: ASGIApp, sessions: Sessions, login: Login, https: bool) -> None:
        self.app = app
        self.sessions = sessions
        self.login = login
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        session = self.sessions.get(request.cookies.get(COOKIE))
        fresh = session is None
        if session is None:
            session = self.sessions.new()
        scope.setdefault("state", {})["session"] = session
        cookie = f"{COOKIE}={session.id}; Path=/; HttpOnly; SameSite=Strict" + (
            "; Secure" if self.https else ""
        )

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS:
                    headers.append(name, value)
                if self.https:
                    headers.append("strict-transport-security", "max-age=31536000")
                if "cache-control" not in headers:
                    headers.append("cache-control", "no-store")
                if fresh:
                    headers.append("set-cookie", cookie)
            await send(message)

        path = scope["path"]
        if self.login.enabled and not session.subject and not path.startswith(OPEN_PATHS):
            target = f"/login?next={quote(path)}"
            await RedirectResponse(target, status_code=303)(scope, receive, send_secured)
            return
        await self.app(scope, receive, send_secured)


def create_app(
    settings: ConsoleSettings,
    client: Client,
    login_check: Login,
    *,
    https: bool = False,
    hub: Hub | None = None,
) -> Starlette:
    """The console app; its hub starts with the app and stops with it."""
    hub = hub or Hub(client, settings.status_poll_s)
    parts = Console(
        settings=settings,
        client=client,
        hub=hub,
        sessions=Sessions(),
        login=login_check,
        https=https,
        stopping=asyncio.Event(),
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        parts.stopping = asyncio.Event()  # bound to the server's event loop
        hub.start()
        try:
            yield
        finally:
            parts.stopping.set()
            await asyncio.get_running_loop().run_in_executor(None, hub.stop)

    host, _ = settings.host_port()
    middleware = []
    if is_loopback(f"{host}:0"):
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=LOOPBACK_HOSTS))
    middleware.append(Middleware(Guard, sessions=parts.sessions, login=login_check, https=https))
    routes = [
        *flow.routes,
        *orders.routes,
        *order.routes,
        *stuck.routes,
        *dead_letters.routes,
        *replicas.routes,
        *login.routes,
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.console = parts
    app.state.templates = templates()
    app.state.started = time.time()
    return app
