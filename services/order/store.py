"""Order persistence: creating an order with its event, reading and listing orders."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import insert
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from paysaga.v1 import events_pb2
from services.common.db import Database, run_after_commit
from services.common.outbox import OutboxWriter
from services.common.paging import Cursor, newest_first_after
from services.common.timeutil import to_timestamp, utcnow
from services.order.domain import Status
from services.order.models import CATALOGUE, ORDERS_TABLE, Order, OrderRow, Product


class UnknownProduct(LookupError):
    """No product with that id in the catalogue."""


class RequestIdReused(ValueError):
    """A request_id already used for a different order request."""


def seed_catalogue(db: Database) -> None:
    """Insert the catalogue's products that are missing (first start)."""
    with db.write() as session:
        for product in CATALOGUE:
            if session.get(Product, product.id) is None:
                session.add(Product.model_validate(product.model_dump()))


@dataclass(frozen=True)
class NewOrder:
    """A checked CreateOrder request."""

    user_id: int
    product_id: int
    request_id: str


def create_orders(
    session: Session,
    requests: Sequence[NewOrder],
    *,
    on_change: Callable[[Sequence[OrderRow]], None],
) -> list[OrderRow | Exception]:
    """Store CREATED orders with their OrderPurchased events, in the caller's transaction.

    Answers each request, in order, with its order or the exception that rejects it
    (UnknownProduct, RequestIdReused); a rejected request writes nothing. A request_id
    seen before (in the database or earlier in `requests`) answers with that order.
    """
    keys = {r.request_id for r in requests if r.request_id}
    by_key: dict[str, OrderRow] = {}
    if keys:
        query = sa_select(ORDERS_TABLE).where(ORDERS_TABLE.c.request_id.in_(keys))
        found = session.execute(query)
        by_key = {row["request_id"]: dict(row) for row in found.mappings()}
    product_ids = {r.product_id for r in requests}
    products = session.exec(select(Product).where(col(Product.id).in_(product_ids)))
    prices = {p.id: p.price_cents for p in products}
    outbox = OutboxWriter()
    created: list[OrderRow] = []
    answers: list[OrderRow | Exception] = []
    for request in requests:
        existing = by_key.get(request.request_id) if request.request_id else None
        if existing is not None:
            answers.append(_same_request(existing, request))
            continue
        price = prices.get(request.product_id)
        if price is None:
            answers.append(
                UnknownProduct(f"product {request.product_id} does not exist in the catalogue")
            )
            continue
        now = utcnow()
        order: OrderRow = {
            "id": str(uuid.uuid4()), "user_id": request.user_id,
            "product_id": request.product_id, "price_cents": price,
            "status": Status.CREATED.value, "failure_reason": "",
            "request_id": request.request_id or None, "created_at": now, "updated_at": now,
        }  # fmt: skip
        event = events_pb2.OrderPurchased(
            order_id=order["id"], user_id=request.user_id, product_id=request.product_id,
            amount_cents=price, create_time=to_timestamp(now),
        )  # fmt: skip
        outbox.add_event(event, key=request.user_id, subject=order["id"])
        if request.request_id:
            by_key[request.request_id] = order
        created.append(order)
        answers.append(order)
    if created:
        session.execute(insert(ORDERS_TABLE), created)
        run_after_commit(session, lambda: on_change(created))
    outbox.write(session)
    return answers


def _same_request(existing: OrderRow, request: NewOrder) -> OrderRow | Exception:
    """The order a retried request_id names, or why the request may not reuse it."""
    if (existing["user_id"], existing["product_id"]) == (request.user_id, request.product_id):
        return existing
    return RequestIdReused(
        f"request_id {request.request_id!r} was already used for an order of user "
        f"{existing['user_id']} for product {existing['product_id']}: use a new request_id"
    )


def list_orders(
    *, session: Session, user_id: int, status: Status | None, after: Cursor | None, limit: int
) -> Sequence[Order]:
    """Orders newest first, optionally of one user / in one status, after a cursor."""
    query = select(Order)
    if user_id:
        query = query.where(Order.user_id == user_id)
    if status is not None:
        query = query.where(Order.status == status)
    query = query.where(newest_first_after(col(Order.created_at), col(Order.id), after))
    query = query.order_by(col(Order.created_at).desc(), col(Order.id).desc()).limit(limit)
    return session.exec(query).all()
