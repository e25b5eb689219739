"""`paysaga dlq ...`: list, show and redrive dead letters (a redrive can be a dry run)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

import grpc

from paysaga.admin.v1 import admin_pb2, admin_pb2_grpc
from services.cli.client import Client, CommandError, explain
from services.cli.render import (
    dumps,
    event_name,
    hexdump,
    short,
    show_bytes,
    stamp_text,
    table,
    to_dict,
    when,
)
from services.cli.targets import CONSUMER_OF, SERVICES


def owner(dead_letter_id: str) -> str:
    """The service that holds a dead letter (the consumer of its topic)."""
    topic = dead_letter_id.split(":", 1)[0]
    if topic not in CONSUMER_OF or dead_letter_id.count(":") != 2:
        raise CommandError(
            f"{dead_letter_id!r} is not a dead letter id: they look like payments:3:17 "
            "(topic:partition:offset, see `paysaga dlq list`)"
        )
    return CONSUMER_OF[topic]


def dlq_list(client: Client, args: argparse.Namespace) -> str:
    """Dead letters of both services, newest first."""

    def page(stub: admin_pb2_grpc.AdminServiceStub, token: str, size: int) -> Any:
        request = admin_pb2.ListDeadLettersRequest(
            topic=args.topic or "", limit=size, page_token=token
        )
        if args.since is not None:
            request.since.FromDatetime(args.since)
        return stub.ListDeadLetters(request, timeout=client.timeout_s)

    services = [CONSUMER_OF[args.topic]] if args.topic else list(SERVICES)
    letters = [
        letter
        for service in services
        for letter in client.pages(service, page, lambda answer: answer.dead_letters, args.limit)
    ]
    letters.sort(key=lambda d: (d.dead_letter_time.seconds, d.dead_letter_time.nanos), reverse=True)
    if args.json:
        return dumps([to_dict(d) for d in letters])
    rows = [
        [
            d.id,
            stamp_text(when(d.dead_letter_time)),
            event_name(d.event_type) or "?",
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
    service = owner(args.id)
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
    """Send dead letters back to their topic, oldest first (applied once, however often
    redriven); with --dry-run, show what would be sent and why, and send nothing. Dead
    letters an --all redrive leaves out (the loop guard) are named on stderr."""
    if args.all == bool(args.ids):
        raise CommandError("name dead letter ids, or use --all --topic T (not both)")
    if args.all and not args.topic:
        raise CommandError("--all needs --topic (orders, payments or transactions)")
    by_service: dict[str, list[str]] = {}
    for dead_letter_id in args.ids:
        by_service.setdefault(owner(dead_letter_id), []).append(dead_letter_id)
    if args.all:
        by_service[CONSUMER_OF[args.topic]] = []
    done: list[admin_pb2.Redriven] = []
    left_out: list[admin_pb2.Redriven] = []
    for service, ids in by_service.items():
        request = admin_pb2.RedriveDeadLettersRequest(
            ids=ids,
            all=args.all,
            topic=args.topic or "",
            requested_by=args.by,
            dry_run=args.dry_run,
        )
        try:
            answer = client.first(service, _redrive_call(request, client.timeout_s))
        except grpc.RpcError as exc:
            raise CommandError(explain(exc, service, "")) from exc
        done += answer.redriven
        left_out += answer.left_out
    for item in left_out:
        sys.stderr.write(f"paysaga: left out {item.id}: {item.note}\n")
    if args.json:
        return dumps([to_dict(r) for r in done])
    if args.dry_run:
        return _dry_run_text(done, len(left_out))
    rows = [[r.id, r.redrive_id, r.redrive_count, r.record_redrive_count] for r in done]
    body = table(["ID", "REDRIVE ID", "TIMES REDRIVEN", "OF ITS RECORD"], rows)
    return f"redriven by {args.by}: {len(done)}\n{body}"


def _dry_run_text(would: list[admin_pb2.Redriven], left_out: int) -> str:
    rows = [
        [
            n,
            r.id,
            f"{r.topic}[{r.partition}]@{r.offset}",
            event_name(r.event_type) or "?",
            r.event_id[:36] or "-",
            show_bytes(r.key) if r.HasField("key") else "(none)",
            r.order_id or "-",
            short(r.reason, 40),
            r.note,
        ]
        for n, r in enumerate(would, 1)
    ]
    headers = ["#", "ID", "FROM", "EVENT", "EVENT ID", "KEY", "ORDER", "REASON", "WHY"]
    also = f"; {left_out} left out (see above)" if left_out else ""
    head = f"dry run, nothing sent: {len(would)} would be redriven, in this order{also}"
    return f"{head}\n{table(headers, rows)}"


def _redrive_call(
    request: admin_pb2.RedriveDeadLettersRequest, timeout_s: float
) -> Callable[[admin_pb2_grpc.AdminServiceStub], admin_pb2.RedriveDeadLettersResponse]:
    return lambda stub: stub.RedriveDeadLetters(request, timeout=timeout_s)
