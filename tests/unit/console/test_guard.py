"""The console's guard: sessions, the operator login, CSRF tokens with the origin check,
the security headers, and the start-up policy off loopback (services.console)."""

from __future__ import annotations

import re

import pytest
from starlette.testclient import TestClient

from services.cli.client import Client
from services.cli.targets import Targets
from services.common.security.auth_settings import AuthSettings
from services.common.security.tokens import mint_token
from services.console.app import create_app
from services.console.guard import COOKIE, Login, Sessions, csrf_problem, same_origin
from services.console.serve import main
from services.console.settings import ConsoleSettings

ORIGIN = "http://127.0.0.1:8088"
SECRET = "s" * 40


def console(auth: AuthSettings | None = None) -> TestClient:
    # Nothing listens on these ports: a call the guard lets through finds the service down.
    client = Client(Targets(order=["127.0.0.1:1"], payment=["127.0.0.1:2"]), 0.5)
    app = create_app(ConsoleSettings(), client, Login(auth or AuthSettings()))
    return TestClient(app, base_url=ORIGIN, follow_redirects=False)


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "the page carries the session's CSRF token"
    return found.group(1)


def session_csrf(web: TestClient) -> str:
    """The CSRF token of the client's session (the services are down: no form to read it from)."""
    session = web.app.state.console.sessions.get(web.cookies[COOKIE])  # type: ignore[attr-defined]
    assert session is not None
    return str(session.csrf)


def test_same_origin_takes_origin_then_referer() -> None:
    assert same_origin({"origin": ORIGIN}, "http", "127.0.0.1:8088") == ""
    assert "evil.example" in same_origin(
        {"origin": "https://evil.example"}, "http", "127.0.0.1:8088"
    )
    assert same_origin({"referer": f"{ORIGIN}/dead-letters/x"}, "http", "127.0.0.1:8088") == ""
    assert "neither" in same_origin({}, "http", "127.0.0.1:8088")


def test_csrf_needs_the_sessions_token_and_the_origin() -> None:
    session = Sessions().new()
    ours = {"origin": ORIGIN}
    assert csrf_problem(session, session.csrf, ours, "http", "127.0.0.1:8088") == ""
    assert "CSRF" in csrf_problem(session, "forged", ours, "http", "127.0.0.1:8088")
    assert "CSRF" in csrf_problem(session, "", ours, "http", "127.0.0.1:8088")
    elsewhere = {"origin": "http://evil.example"}
    assert "evil.example" in csrf_problem(
        session, session.csrf, elsewhere, "http", "127.0.0.1:8088"
    )
    assert "session" in csrf_problem(None, session.csrf, ours, "http", "127.0.0.1:8088")


def test_every_page_carries_a_strict_policy_and_a_locked_cookie() -> None:
    web = console()
    answer = web.get("/dead-letters")
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src 'self'" in policy
    assert "unsafe-inline" not in policy and "frame-ancestors 'none'" in policy
    assert answer.headers["x-content-type-options"] == "nosniff"
    cookie = answer.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert "cannot reach the payment service" in answer.text, "a service down is named"
    assert "make up" in answer.text


def test_a_redrive_post_without_the_token_or_from_elsewhere_is_refused() -> None:
    web = console()
    web.get("/dead-letters/payments:0:1/redrive")
    token = session_csrf(web)
    form = {"id": "payments:0:1"}
    refused = web.post("/dead-letters/redrive", data=form, headers={"origin": ORIGIN})
    assert refused.status_code == 403 and "CSRF" in refused.text
    elsewhere = {"origin": "https://evil.example"}
    refused = web.post(
        "/dead-letters/redrive", data={**form, "csrf_token": token}, headers=elsewhere
    )
    assert refused.status_code == 403 and "evil.example" in refused.text
    sent = web.post(
        "/dead-letters/redrive", data={**form, "csrf_token": token}, headers={"origin": ORIGIN}
    )
    assert sent.status_code == 303, "the guard lets it through (to a service that is down)"
    assert sent.headers["location"] == "/dead-letters/payments:0:1"
    after = web.get(sent.headers["location"])
    assert "Not redriven" in after.text and "payment service does not answer" in after.text


def test_a_host_other_than_loopback_is_refused_on_loopback() -> None:
    assert console().get("/", headers={"host": "evil.example"}).status_code == 400


def test_with_auth_on_only_an_operators_token_logs_in() -> None:
    auth = AuthSettings(enabled=True, hs256_secret=SECRET)
    web = console(auth)
    first = web.get("/orders")
    assert first.status_code == 303 and first.headers["location"] == "/login?next=/orders"
    page = web.get("/login")
    token = csrf_of(page.text)
    old_cookie = web.cookies[COOKIE]
    user = mint_token(auth, subject="2", ttl_s=600)
    refused = web.post(
        "/login",
        data={"csrf_token": token, "token": user, "next": "/orders"},
        headers={"origin": ORIGIN},
    )
    assert refused.status_code == 401 and "lacks the paysaga:operator scope" in refused.text
    operator = mint_token(auth, subject="alice", operator=True, ttl_s=600)
    done = web.post(
        "/login",
        data={"csrf_token": token, "token": operator, "next": "/orders"},
        headers={"origin": ORIGIN},
    )
    assert done.status_code == 303 and done.headers["location"] == "/orders"
    assert web.cookies[COOKIE] != old_cookie, "a login gets a new session id"
    assert "alice" in web.get("/orders").text


def test_off_loopback_it_refuses_to_start_without_tls_and_auth(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PAYSAGA_CONSOLE_ADDRESS", "0.0.0.0:8088")
    for name in ("PAYSAGA_INSECURE", "PAYSAGA_AUTH_ENABLED", "PAYSAGA_TLS_CERT_FILE"):
        monkeypatch.delenv(name, raising=False)
    assert main([]) == 2
    error = capsys.readouterr().err
    assert "refusing to serve 0.0.0.0:8088 without TLS and authentication" in error


def test_after_login_only_a_path_of_the_console_is_followed() -> None:
    from starlette.requests import Request

    from services.console.pages.login import _next

    request = Request({"type": "http", "query_string": b"", "headers": []})
    assert _next(request, "/dead-letters?topic=orders") == "/dead-letters?topic=orders"
    for elsewhere in ("//evil.example/", "/\\evil.example", "https://evil.example/", "x"):
        assert _next(request, elsewhere) == "/", elsewhere
