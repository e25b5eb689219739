"""`/login` and `/logout`: with auth on, an operator logs in with a bearer token (checked by
the services' own verifier, the operator scope required); the session then names them.
`/healthz`: the console answers (for the stack launcher)."""

from __future__ import annotations

import html

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from services.console.guard import COOKIE, csrf_problem
from services.console.web import console, render, session_of


def _next(request: Request, form_value: str = "") -> str:
    """Where to go after logging in: a path of this console only (never another site)."""
    target = form_value or request.query_params.get("next", "/")
    local = target.startswith("/") and not target.startswith(("//", "/\\"))
    return target if local and "\n" not in target else "/"


async def login_page(request: Request) -> Response:
    return render(request, "login.html", {"next": _next(request), "error": ""})


async def login(request: Request) -> Response:
    parts = console(request)
    session = session_of(request)
    form = await request.form()
    target = _next(request, str(form.get("next", "")))
    refused = csrf_problem(
        session,
        str(form.get("csrf_token", "")),
        {k.lower(): v for k, v in request.headers.items()},
        request.url.scheme,
        request.headers.get("host", ""),
    )
    if refused:
        return render(request, "login.html", {"next": target, "error": refused}, 403)
    try:
        subject, expires = parts.login.check(str(form.get("token", "")))
    except ValueError as exc:
        return render(request, "login.html", {"next": target, "error": str(exc)}, 401)
    fresh = parts.sessions.log_in(session, subject, True, expires)
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE, fresh.id, httponly=True, samesite="strict", secure=parts.https, path="/"
    )
    return response


async def logout(request: Request) -> Response:
    parts = console(request)
    session = session_of(request)
    form = await request.form()
    refused = csrf_problem(
        session,
        str(form.get("csrf_token", "")),
        {k.lower(): v for k, v in request.headers.items()},
        request.url.scheme,
        request.headers.get("host", ""),
    )
    if refused:
        return PlainTextResponse(html.escape(refused), status_code=403)
    parts.sessions.end(session)
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok\n")


routes = [
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/healthz", healthz),
]
