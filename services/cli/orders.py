"""`paysaga orders ...`: orders not terminal past a threshold (stuck), and FAILED orders whose
charge has no refund yet (held), from what both services know."""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc

from paysaga.admin.v1 import admin_pb2
from services.cli.client import Client, CommandError, explain
from services.cli.render import dumps, duration, short, table, to_dict, when
from services.common.money import format_cents

#: The most order ids one ListHeldOrders asks the Payment service about (the API's limit).
MAX_ORDERS = 1000


def orders_stuck(client: Client, args: argparse.Namespace) -> str:
    """Orders not terminal past --older-than, with the step each waits for."""
    stuck = client.pages(
        "order",
        lambda stub, token, size: stub.ListStuckOrders(
            admin_pb2.ListStuckOrdersRequest(
                older_than_seconds=args.older_than, limit=size, page_token=token
            ),
            timeout=client.timeout_s,
        ),
        lambda answer: answer.orders,
        args.limit,
    )
    if args.json:
        return dumps([to_dict(o) for o in stuck])
    now = datetime.now(UTC)
    rows = []
    for order in stuck:
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


@dataclass
class HeldMoney:
    """The orders the Order service sees held, and which of them the Payment service holds
    money for (None: it did not answer, `payment_error` says why)."""

    orders: list[admin_pb2.HeldOrder]
    payment_held: dict[str, admin_pb2.HeldOrder] | None
    payment_error: str = ""


def held_money(client: Client, older_than_s: float, limit: int) -> HeldMoney:
    """Ask the Order service for its held orders, then the Payment service about them."""
    orders = client.pages(
        "order",
        lambda stub, token, size: stub.ListHeldOrders(
            admin_pb2.ListHeldOrdersRequest(
                older_than_seconds=older_than_s, limit=size, page_token=token
            ),
            timeout=client.timeout_s,
        ),
        lambda answer: answer.orders,
        limit,
    )
    if not orders:
        return HeldMoney(orders, {})
    ids = [o.order_id for o in orders]
    charged: dict[str, admin_pb2.HeldOrder] = {}
    try:
        for start in range(0, len(ids), MAX_ORDERS):
            chunk = ids[start : start + MAX_ORDERS]
            for order in client.pages(
                "payment",
                lambda stub, token, size: stub.ListHeldOrders(
                    admin_pb2.ListHeldOrdersRequest(
                        order_ids=chunk,  # noqa: B023
                        limit=size,
                        page_token=token,
                    ),
                    timeout=client.timeout_s,
                ),
                lambda answer: answer.orders,
                len(chunk),
            ):
                charged[order.order_id] = order
    except grpc.RpcError as exc:
        return HeldMoney(orders, None, explain(exc, "payment", ""))
    except CommandError as exc:
        return HeldMoney(orders, None, str(exc))
    return HeldMoney(orders, charged)


def _payment_view(found: HeldMoney, order_id: str) -> str:
    if found.payment_held is None:
        return "unknown"
    if order_id in found.payment_held:
        return "charged, not refunded"
    return "not held (refunded, or never charged)"


def orders_held(client: Client, args: argparse.Namespace) -> str:
    """FAILED orders whose charge has no refund yet: the Order service's view, each with the
    Payment service's."""
    found = held_money(client, args.older_than, args.limit)
    if args.json:
        out = []
        for order in found.orders:
            item = to_dict(order)
            item["payment"] = _payment_view(found, order.order_id)
            out.append(item)
        return dumps(out)
    now = datetime.now(UTC)
    rows = []
    for order in found.orders:
        charged = when(order.charge_time)
        again = when(order.reannounce_time)
        rows.append(
            [
                order.order_id,
                order.user_id,
                format_cents(order.amount_cents),
                duration((now - charged).total_seconds()) if charged else "-",
                f"{duration((now - again).total_seconds())} ago" if again else "never",
                _payment_view(found, order.order_id),
                short(order.failure_reason, 50),
            ]
        )
    confirmed = (
        f"the payment service holds money for {len(found.payment_held)}"
        if found.payment_held is not None
        else f"the payment service did not answer: {found.payment_error}"
    )
    head = (
        f"FAILED orders charged and not refunded for over {duration(args.older_than)}: "
        f"{len(rows)} seen by the order service; {confirmed}"
    )
    headers = ["ORDER", "USER", "AMOUNT", "HELD FOR", "RE-ANNOUNCED", "PAYMENT SERVICE", "REASON"]
    return f"{head}\n{table(headers, rows)}"
