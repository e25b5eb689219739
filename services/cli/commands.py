"""The `paysaga` commands: each calls the admin API and prints a table, or JSON with --json."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import grpc

from paysaga.admin.v1 import admin_pb2, admin_pb2_grpc
from services.cli.client import Client, CommandError, explain
from services.cli.render import (
    clock,
    dumps,
    duration,
    hexdump,
    short,
    show_bytes,
    stamp_text,
    table,
    to_dict,
    when,
)
from services.cli.targets import CONSUMER_OF, SERVICES

_STEP_NAMES = {
    admin_pb2.STEP_KIND_ORDER_CREATED: "order created",
    admin_pb2.STEP_KIND_PRODUCED: "produced",
    admin_pb2.STEP_KIND_APPLIED: "applied",
    admin_pb2.STEP_KIND_DEAD_LETTERED: "DEAD-LETTERED",
    admin_pb2.STEP_KIND_REDRIVEN: "redriven",
}


def _type_name(event_type: str) -> str:
    """paysaga.v1.OrderPurchased -> OrderPurchased."""
    return event_type.rsplit(".", 1)[-1]


def _where(step: admin_pb2.Step) -> str:
    if not step.topic:
        return ""
    if step.partition < 0:
        return step.topic
    return f"{step.topic}[{step.partition}]@{step.offset}"


# -- order timeline ----------------------------------------------------------------------


def order_timeline(client: Client, args: argparse.Namespace) -> str:
    """Every step both services recorded of one order, in time order, with the gaps."""
    request = admin_pb2.GetOrderTimelineRequest(order_id=args.order_id)
    answers: dict[str, admin_pb2.GetOrderTimelineResponse] = {}
    for service in SERVICES:
        try:
            answers[service] = client.first(
                service, lambda stub: stub.GetOrderTimeline(request, timeout=client.timeout_s)
            )
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:  # type: ignore[attr-defined]
                raise CommandError(explain(exc, service, "")) from exc
    if not answers:
        raise CommandError(f"no order {args.order_id!r}: neither service recorded anything of it")
    steps = sorted(
        (s for answer in answers.values() for s in answer.steps),
        key=lambda s: (s.time.seconds, s.time.nanos),
    )
    order = answers.get("order", admin_pb2.GetOrderTimelineResponse())
    if args.json:
        return dumps(
            {
                "order_id": args.order_id,
                "status": order.status,
                "failure_reason": order.failure_reason,
                "steps": [to_dict(s) for s in steps],
            }
        )
    rows = []
    previous: datetime | None = None
    for step in steps:
        at = when(step.time)
        gap = duration((at - previous).total_seconds()) if at and previous else ""
        produced = when(step.produced_time)
        latency = (
            duration((at - produced).total_seconds())
            if at and produced and step.kind == admin_pb2.STEP_KIND_APPLIED
            else ""
        )
        rows.append(
            [
                clock(at),
                f"+{gap}" if gap else "",
                f"{step.service}/{step.replica}" if step.replica else step.service,
                _STEP_NAMES.get(step.kind, "?"),
                _where(step),
                _type_name(step.event_type),
                step.event_id[:8],
                latency,
                short(step.detail, 70),
            ]
        )
        previous = at or previous
    first = when(steps[0].time) if steps else None
    status = order.status or "(not known to the Order service)"
    reason = f" — {order.failure_reason}" if order.failure_reason else ""
    head = f"order {args.order_id}: {status}{reason}\ntimes UTC, {stamp_text(first)[:10]}"
    headers = ["TIME", "+GAP", "SERVICE/REPLICA", "STEP", "TOPIC[P]@OFFSET", "EVENT", "ID"]
    body = table([*headers, "LATENCY", "DETAIL"], rows)
    return f"{head}\n{body}"


# -- stuck orders ------------------------------------------------------------------------


def orders_stuck(client: Client, args: argparse.Namespace) -> str:
    """Orders not terminal past --older-than, with the step each waits for."""
    request = admin_pb2.ListStuckOrdersRequest(older_than_seconds=args.older_than, limit=args.limit)
    answer = client.first(
        "order", lambda stub: stub.ListStuckOrders(request, timeout=client.timeout_s)
    )
    if args.json:
        return dumps([to_dict(o) for o in answer.orders])
    now = datetime.now(UTC)
    rows = []
    for order in answer.orders:
        created = when(order.create_time)
        deadline = when(order.deadline_time)
        rows.append(
            [
                order.order_id,
                order.user_id,
                duration((now - created).total_seconds()) if created else "-",
                duration((deadline - now).total_seconds()) if deadline else "-",
                order.waiting_for,
            ]
        )
    older = duration(args.older_than)
    body = table(["ORDER", "USER", "AGE", "DEADLINE IN", "WAITING FOR"], rows)
    return f"orders not terminal after {older}: {len(rows)}\n{body}"


# -- dead letters ------------------------------------------------------------------------


def _owner(dead_letter_id: str) -> str:
    topic = dead_letter_id.split(":", 1)[0]
    if topic not in CONSUMER_OF or dead_letter_id.count(":") != 2:
        raise CommandError(
            f"{dead_letter_id!r} is not a dead letter id: they look like payments:3:17 "
            "(topic:partition:offset, see `paysaga dlq list`)"
        )
    return CONSUMER_OF[topic]


def dlq_list(client: Client, args: argparse.Namespace) -> str:
    """Dead letters of both services, newest first."""
    request = admin_pb2.ListDeadLettersRequest(topic=args.topic or "", limit=args.limit)
    if args.since is not None:
        request.since.FromDatetime(args.since)
    services = [CONSUMER_OF[args.topic]] if args.topic else list(SERVICES)
    letters = [
        letter
        for service in services
        for letter in client.first(
            service, lambda stub: stub.ListDeadLetters(request, timeout=client.timeout_s)
        ).dead_letters
    ]
    letters.sort(key=lambda d: (d.dead_letter_time.seconds, d.dead_letter_time.nanos), reverse=True)
    if args.json:
        return dumps([to_dict(d) for d in letters])
    rows = [
        [
            d.id,
            stamp_text(when(d.dead_letter_time)),
            _type_name(d.event_type) or "?",
            d.event_id[:36],
            d.order_id or "-",
            d.redrive_count or "",
            short(d.reason, 60),
        ]
        for d in letters
    ]
    return table(
        ["ID", "DEAD-LETTERED (UTC)", "EVENT", "EVENT ID", "ORDER", "REDRIVES", "REASON"], rows
    )


def dlq_show(client: Client, args: argparse.Namespace) -> str:
    """One dead letter: where it came from, why, its headers and its payload."""
    service = _owner(args.id)
    request = admin_pb2.GetDeadLetterRequest(id=args.id)
    try:
        answer = client.first(
            service, lambda stub: stub.GetDeadLetter(request, timeout=client.timeout_s)
        )
    except grpc.RpcError as exc:
        raise CommandError(explain(exc, service, "")) from exc
    if args.json:
        return dumps(to_dict(answer))
    d = answer.dead_letter
    lines = [
        f"dead letter {d.id} (held by the {d.service} service)",
        f"  original      {d.topic} partition {d.partition} offset {d.offset}",
        f"  event         {d.event_type or '?'} id {d.event_id}",
        f"  order         {d.order_id or '-'}",
        f"  dead-lettered {stamp_text(when(d.dead_letter_time))} UTC",
        f"  reason        {d.reason}",
    ]
    if d.redrive_count:
        lines.append(
            f"  redriven      {d.redrive_count} time(s), last {stamp_text(when(d.redrive_time))}"
            f" UTC by {d.redriven_by}"
        )
    lines.append(
        f"  key           {show_bytes(answer.key) if answer.HasField('key') else '(none)'}"
    )
    lines.append("headers")
    lines += [f"  {h.name} = {show_bytes(h.value)}" for h in answer.headers]
    if answer.decoded:
        lines.append(f"payload ({len(answer.value)} bytes, decoded with the contract)")
        lines += [f"  {line}" for line in answer.decoded.rstrip().splitlines()]
    else:
        lines.append(f"payload ({len(answer.value)} bytes; does not decode: {answer.decode_error})")
        lines += [f"  {line}" for line in hexdump(answer.value).splitlines()]
    return "\n".join(lines)


def dlq_redrive(client: Client, args: argparse.Namespace) -> str:
    """Send dead letters back to their topic (applied once, however often redriven)."""
    if args.all == bool(args.ids):
        raise CommandError("name dead letter ids, or use --all --topic T (not both)")
    if args.all and not args.topic:
        raise CommandError("--all needs --topic (orders, payments or transactions)")
    by_service: dict[str, list[str]] = {}
    for dead_letter_id in args.ids:
        by_service.setdefault(_owner(dead_letter_id), []).append(dead_letter_id)
    if args.all:
        by_service[CONSUMER_OF[args.topic]] = []
    done: list[admin_pb2.Redriven] = []
    for service, ids in by_service.items():
        request = admin_pb2.RedriveDeadLettersRequest(
            ids=ids, all=args.all, topic=args.topic or "", requested_by=args.by
        )
        try:
            answer = client.first(service, _redrive_call(request, client.timeout_s))
        except grpc.RpcError as exc:
            raise CommandError(explain(exc, service, "")) from exc
        done += answer.redriven
    if args.json:
        return dumps([to_dict(r) for r in done])
    rows = [[r.id, r.redrive_id, r.redrive_count] for r in done]
    body = table(["ID", "REDRIVE ID", "TIMES REDRIVEN"], rows)
    return f"redriven by {args.by}: {len(done)}\n{body}"


def _redrive_call(
    request: admin_pb2.RedriveDeadLettersRequest, timeout_s: float
) -> Callable[[admin_pb2_grpc.AdminServiceStub], admin_pb2.RedriveDeadLettersResponse]:
    return lambda stub: stub.RedriveDeadLetters(request, timeout=timeout_s)


# -- status ------------------------------------------------------------------------------


def _replica_status(client: Client, service: str, address: str) -> dict[str, Any]:
    try:
        answer = client.admin(address).GetStatus(
            admin_pb2.GetStatusRequest(), timeout=client.timeout_s
        )
    except grpc.RpcError as exc:
        return {"service": service, "address": address, "error": explain(exc, service, address)}
    names = list(answer.health_names) or [""]
    found = to_dict(answer)
    found.update(
        address=address,
        health={name or "(server)": client.health(address, name) for name in names},
    )
    return found


def _health_summary(health: dict[str, str]) -> str:
    """ "SERVING (4 names)" when all are, else the names that are not."""
    if all(v == "SERVING" for v in health.values()):
        return f"SERVING ({len(health)} names)"
    return ", ".join(f"{k}={v}" for k, v in health.items() if v != "SERVING")


def _lag_rows(replica: dict[str, Any]) -> list[list[object]]:
    """Per topic: the partitions this replica holds, their lag, and which are behind."""
    held: dict[str, list[dict[str, Any]]] = {}
    for p in replica.get("lag", []):
        if p.get("assigned_here"):
            held.setdefault(p["topic"], []).append(p)
    rows: list[list[object]] = []
    for topic, parts in held.items():
        behind = [f"p{p.get('partition', 0)}={p['lag']}" for p in parts if int(p.get("lag", 0))]
        rows.append(
            [
                replica["service"],
                replica.get("replica", ""),
                topic,
                ",".join(str(p.get("partition", 0)) for p in parts),
                sum(int(p.get("lag", 0)) for p in parts),
                " ".join(behind) or "-",
            ]
        )
    return rows


def status(client: Client, args: argparse.Namespace) -> tuple[str, int]:
    """Every replica of both services: health, backlog, lag, dead letters, progress."""
    found = [
        _replica_status(client, service, address)
        for service in SERVICES
        for address in client.targets.of(service)
    ]
    failed = sum("error" in replica for replica in found)
    if args.json:
        return dumps(found), 1 if failed else 0
    now = datetime.now(UTC)
    rows, problems, lags = [], [], []
    for r in found:
        name = f"{r['service']} {r['address']}"
        if "error" in r:
            rows.append([r["service"], r["address"], "-", "UNREACHABLE", "", "", "", "", ""])
            problems.append(f"{name}: {r['error']}")
            continue
        last = r.get("last_batch_time")
        ago = duration((now - datetime.fromisoformat(last)).total_seconds()) if last else "never"
        lag_total = sum(int(p.get("lag", 0)) for p in r.get("lag", []))
        dead = sum(int(t.get("count", 0)) for t in r.get("dead_letters", []))
        oldest = duration(r.get("outbox_oldest_age_seconds", 0))
        pending = int(r.get("outbox_pending", 0))
        health = _health_summary(r["health"])
        rows.append(
            [
                r["service"],
                r["address"],
                r.get("replica", ""),
                health,
                f"{pending} (oldest {oldest})" if pending else "0",
                r.get("outbox_parked", 0),
                "?" if r.get("lag_error") else lag_total,
                dead,
                f"{ago} ago ({r.get('records_applied', 0)} records)" if last else "never",
            ]
        )
        problems += [f"{name}: {p}" for p in r.get("problems", [])]
        lags += _lag_rows(r)
    headers = ["SERVICE", "ADDRESS", "REPLICA", "HEALTH", "OUTBOX PENDING", "PARKED"]
    out = [table([*headers, "LAG", "DEAD LETTERS", "LAST BATCH"], rows)]
    if lags:
        out += ["", "consumer lag on the partitions each replica holds:"]
        out.append(table(["SERVICE", "REPLICA", "TOPIC", "PARTITIONS", "LAG", "BEHIND"], lags))
    out += ["", "problems:" if problems else "problems: none"]
    out += [f"  {p}" for p in problems]
    return "\n".join(out), 1 if failed else 0
