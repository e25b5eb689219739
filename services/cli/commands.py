"""The `paysaga` commands of one order and of every replica: a timeline, the status. (Orders
are in services.cli.orders, dead letters in services.cli.deadletters.) Each calls the admin
API and prints a table, or JSON with --json."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

import grpc

from paysaga.admin.v1 import admin_pb2
from services.cli.client import Client, CommandError, explain
from services.cli.orders import MAX_ORDERS, held_money
from services.cli.render import (
    clock,
    dumps,
    duration,
    event_name,
    short,
    stamp_text,
    table,
    to_dict,
    when,
)
from services.cli.targets import SERVICES

_STEP_NAMES = {
    admin_pb2.STEP_KIND_ORDER_CREATED: "order created",
    admin_pb2.STEP_KIND_PRODUCED: "produced",
    admin_pb2.STEP_KIND_APPLIED: "applied",
    admin_pb2.STEP_KIND_DEAD_LETTERED: "DEAD-LETTERED",
    admin_pb2.STEP_KIND_REDRIVEN: "redriven",
}


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
                event_name(step.event_type),
                step.event_id[-8:],  # the random end: ids begin with their time
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


def _count_held_by_payment(client: Client, found: list[dict[str, Any]]) -> None:
    """Set `held_orders` of each payment replica to how many of the orders the Order
    service sees held the Payment service holds money for ("?" if unknown): it cannot
    count them alone, as it cannot tell a FAILED order."""
    answered = [r for r in found if "error" not in r]
    seen = max(
        (int(r.get("held_orders", 0)) for r in answered if r["service"] == "order"), default=0
    )
    confirmed = "0"
    if seen:
        try:
            money = held_money(client, 0.001, MAX_ORDERS)
        except (CommandError, grpc.RpcError):
            money = None
        held = money.payment_held if money is not None else None
        confirmed = str(len(held)) if held is not None else "?"
    for replica in answered:
        if replica["service"] == "payment":
            replica["held_orders"] = confirmed


def status(client: Client, args: argparse.Namespace) -> tuple[str, int]:
    """Every replica of both services: health, backlog, lag, dead letters, held money,
    progress."""
    found = [
        _replica_status(client, service, address)
        for service in SERVICES
        for address in client.targets.of(service)
    ]
    _count_held_by_payment(client, found)
    failed = sum("error" in replica for replica in found)
    if args.json:
        return dumps(found), 1 if failed else 0
    now = datetime.now(UTC)
    rows, problems, lags = [], [], []
    for r in found:
        name = f"{r['service']} {r['address']}"
        if "error" in r:
            rows.append([r["service"], r["address"], "-", "UNREACHABLE", "", "", "", "", "", ""])
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
                r.get("held_orders", 0),
                f"{ago} ago ({r.get('records_applied', 0)} records)" if last else "never",
            ]
        )
        problems += [f"{name}: {p}" for p in r.get("problems", [])]
        lags += _lag_rows(r)
    headers = ["SERVICE", "ADDRESS", "REPLICA", "HEALTH", "OUTBOX PENDING", "PARKED"]
    out = [table([*headers, "LAG", "DEAD LETTERS", "HELD", "LAST BATCH"], rows)]
    if lags:
        out += ["", "consumer lag on the partitions each replica holds:"]
        out.append(table(["SERVICE", "REPLICA", "TOPIC", "PARTITIONS", "LAG", "BEHIND"], lags))
    out += ["", "problems:" if problems else "problems: none"]
    out += [f"  {p}" for p in problems]
    return "\n".join(out), 1 if failed else 0
