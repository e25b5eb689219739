"""`/dead-letters`: dead letters with their reasons; `/dead-letters/<id>`: one, with its
headers and its payload decoded with the contract (or in hex); and the redrive.

A redrive goes through a confirmation page that shows what will be sent: the record as it
was consumed (topic, key, headers, payload) plus the redrive id it carries back, which the
consumer's inbox keeps so that the record is applied at most once however often it is
redriven. Only the confirmation's POST sends it: it needs the session's CSRF token and the
console's own origin (services.console.guard), and the service records who asked. After
the POST the browser is sent on (303) to a page that says what happened, so reloading it
sends nothing again.
"""

from __future__ import annotations

from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from services.cli import parse_since
from services.cli.targets import CONSUMER_OF
from services.common.messaging.journal import REDRIVE_HEADER, redrive_id
from services.console import gateway
from services.console.gateway import ServiceDown
from services.console.guard import csrf_problem
from services.console.present import trace_id
from services.console.sse import changed_fragments, events
from services.console.web import call, console, fragment, problem, render, session_of

PAGE_SIZE = 50
LIMIT = 1000


def _query(request: Request) -> dict[str, Any]:
    query = request.query_params
    found: dict[str, Any] = {"topic": "", "since": "", "errors": [], "since_time": None}
    topic = query.get("topic", "").strip()
    if topic and topic not in CONSUMER_OF:
        found["errors"].append(f"no saga topic {topic!r}: choose {', '.join(CONSUMER_OF)}")
    elif topic:
        found["topic"] = topic
    since = query.get("since", "").strip()
    if since:
        try:
            found["since_time"], found["since"] = parse_since(since), since
        except Exception:
            found["errors"].append(f"since {since!r}: give a duration ago (1h) or a time")
    page = query.get("page", "1")
    found["page"] = int(page) if page.isdigit() and int(page) > 0 else 1
    return found


def _listing(request: Request, query: dict[str, Any]) -> dict[str, Any]:
    found = gateway.dead_letters(
        console(request).client, topic=query["topic"], since=query["since_time"], limit=LIMIT
    )
    first = (query["page"] - 1) * PAGE_SIZE
    return {
        "query": query,
        "letters": found.letters[first : first + PAGE_SIZE],
        "total": len(found.letters),
        "more": len(found.letters) > first + PAGE_SIZE,
        "problems": [problem(ServiceDown(s, why)) for s, why in found.missing.items()],
        "topics": list(CONSUMER_OF),
    }


async def listing(request: Request) -> Response:
    query = _query(request)
    if query["errors"]:
        return render(request, "dead_letters.html", {"query": query, "letters": []}, 400)
    context = await call(_listing, request, query)
    context["notices"] = _take_notices(request)
    return render(request, "dead_letters.html", context, 503 if context["problems"] else 200)


async def listing_stream(request: Request) -> Response:
    query = _query(request)

    async def rows() -> str:
        return fragment(request, "_dead_letters.html", await call(_listing, request, query))

    return events(changed_fragments(rows), 3.0, console(request).stopping)


def _one(request: Request) -> tuple[str, str | None]:
    letter_id = request.path_params["letter_id"]
    return letter_id, gateway.owner(letter_id)


def _dry_run(request: Request, service: str, ids: list[str], topic: str) -> dict[str, Any]:
    """What the service's dry run says a redrive would send, or why it would refuse."""
    parts = console(request)
    try:
        answer = gateway.redrive(
            parts.client,
            service,
            ids=ids,
            topic=topic,
            requested_by=parts.login.recorded_as(session_of(request)),
            dry_run=True,
        )
    except grpc.RpcError as exc:
        if exc.code() == grpc.StatusCode.FAILED_PRECONDITION:  # type: ignore[attr-defined]
            return {"refusal": exc.details()}  # type: ignore[attr-defined]
        raise
    return {"would": list(answer.redriven), "left_out": list(answer.left_out)}


async def _fetch(request: Request, template: str, dry_run: bool = False) -> Response:
    letter_id, service = _one(request)
    context: dict[str, Any] = {"letter_id": letter_id, "notices": _take_notices(request)}
    if service is None:
        context["error"] = (
            f"{letter_id!r} is not a dead letter id: they look like payments:3:17 "
            "(topic:partition:offset)"
        )
        return render(request, template, context, 404)
    try:
        answer = await call(gateway.dead_letter, console(request).client, service, letter_id)
    except (ServiceDown, grpc.RpcError) as exc:
        if isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
            context["error"] = f"the {service} service holds no dead letter {letter_id}"
            return render(request, template, context, 404)
        context["problem"] = problem(exc, service)
        return render(request, template, context, 503)
    if dry_run:
        try:
            context["dry_run"] = await call(_dry_run, request, service, [letter_id], "")
        except (ServiceDown, grpc.RpcError) as exc:
            context["problem"] = problem(exc, service)
    headers = [(h.name, h.value) for h in answer.headers]
    traceparent = next((v for n, v in headers if n == "traceparent"), b"")
    context.update(
        answer=answer,
        letter=answer.dead_letter,
        headers=headers,
        trace_id=trace_id(traceparent),
        redrive_header=REDRIVE_HEADER,
        redrive_id=redrive_id(letter_id),
    )
    return render(request, template, context)


def _take_notices(request: Request) -> list[str]:
    session = session_of(request)
    found, session.notices = session.notices, []
    return found


async def detail(request: Request) -> Response:
    return await _fetch(request, "dead_letter.html")


async def confirm_one(request: Request) -> Response:
    return await _fetch(request, "redrive_confirm.html", dry_run=True)


async def confirm_topic(request: Request) -> Response:
    """The confirmation of `redrive all of a topic`: every dead letter it would send."""
    topic = request.query_params.get("topic", "")
    if topic not in CONSUMER_OF:
        error = {"error": f"choose a topic to redrive: {', '.join(CONSUMER_OF)}"}
        return render(request, "redrive_confirm.html", error, 400)
    try:
        found = await call(
            gateway.dead_letters, console(request).client, topic=topic, since=None, limit=LIMIT
        )
    except grpc.RpcError as exc:
        return render(request, "redrive_confirm.html", {"problem": problem(exc)}, 502)
    context: dict[str, Any] = {
        "topic": topic,
        "pending": [d for d in found.letters if not d.redrive_count],
        "problems": [problem(ServiceDown(s, why)) for s, why in found.missing.items()],
    }
    if context["pending"] and not context["problems"]:
        try:
            context["dry_run"] = await call(_dry_run, request, CONSUMER_OF[topic], [], topic)
        except (ServiceDown, grpc.RpcError) as exc:
            context["problems"].append(problem(exc, CONSUMER_OF[topic]))
    return render(request, "redrive_confirm.html", context, 503 if context["problems"] else 200)


async def redrive(request: Request) -> Response:
    """The confirmation's POST: send the dead letters back; 303 to what happened."""
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
        return render(request, "refused.html", {"why": refused}, 403)
    if parts.login.enabled and not session.operator:
        return render(request, "refused.html", {"why": "redrive needs an operator's login"}, 403)
    letter_id = str(form.get("id", ""))
    topic = str(form.get("topic", ""))
    service = gateway.owner(letter_id) if letter_id else CONSUMER_OF.get(topic)
    if service is None:
        return render(request, "refused.html", {"why": "name a dead letter or a topic"}, 400)
    by = parts.login.recorded_as(session)
    try:
        answer = await call(
            gateway.redrive,
            parts.client,
            service,
            ids=[letter_id] if letter_id else [],
            topic="" if letter_id else topic,
            requested_by=by,
        )
    except (ServiceDown, grpc.RpcError) as exc:
        said = problem(exc, service)
        session.notices.append(f"Not redriven: {said.what} {said.remedy}".strip())
    else:
        sent = ", ".join(
            f"{r.id} (redrive id {r.redrive_id}, time {r.redrive_count})" for r in answer.redriven
        )
        session.notices.append(
            f"Redriven by {by}: {len(answer.redriven)} dead letter(s). {sent}".strip()
        )
    target = f"/dead-letters/{letter_id}" if letter_id else f"/dead-letters?topic={topic}"
    return RedirectResponse(target, status_code=303)


routes = [
    Route("/dead-letters", listing),
    Route("/dead-letters/events", listing_stream),
    Route("/dead-letters/redrive", confirm_topic, methods=["GET"]),
    Route("/dead-letters/redrive", redrive, methods=["POST"]),
    Route("/dead-letters/{letter_id}", detail),
    Route("/dead-letters/{letter_id}/redrive", confirm_one),
]
