"""Order persistence: creating an order with its event, reading and listing orders."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Table, bindparam, tuple_
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from paysaga.v1 import events_pb2
from services.common.ids import time_ordered_uuid
from services.common.messaging.outbox import OutboxWriter
from services.common.observability import tracing
from services.common.persistence.bulk import BulkInsert
from services.common.persistence.db import Database, insert_ignoring_conflicts
from services.common.persistence.prepared import Prepared
from services.common.persistence.transaction import Transaction
from services.common.serving.paging import Cursor, newest_first_after
from services.common.timeutil import to_timestamp, utcnow
from services.order import metrics
from services.order.changes import announce
from services.order.domain import Status
from services.order.models import (
    CATALOGUE,
    DEADLINES_TABLE,
    ORDERS_TABLE,
    PRODUCTS_TABLE,
    Order,
    OrderRow,
    Product,
)
from services.saga.topics import SAGA_TOPICS

_INSERT_DEADLINES = BulkInsert(DEADLINES_TABLE, ("order_id", "due_at"))
_INSERT_ORDERS = BulkInsert(
    ORDERS_TABLE,
    (
        "id",
        "user_id",
        "product_id",
        "price_cents",
        "status",
        "failure_reason",
        "request_id",
        "version",
        "created_at",
        "updated_at",
    ),
    ignore_conflicts_on=("user_id", "request_id"),
    returning="id",
)
_SELECT_PRICES = Prepared(
    sa_select(PRODUCTS_TABLE.c.id, PRODUCTS_TABLE.c.price_cents).where(
        PRODUCTS_TABLE.c.id.in_(bindparam("product_ids", expanding=True))
    ),
    expanding=["product_ids"],
)


class UnknownProduct(LookupError):
    """No product with that id in the catalogue."""


class RequestIdReused(ValueError):
    """A request_id already used for a different order request."""


def seed_catalogue(db: Database) -> int:
    """Insert the catalogue's products that are missing; return how many were added.

    Idempotent and safe when several replicas seed at once (ON CONFLICT DO NOTHING).
    """
    table: Table = Product.__table__  # type: ignore[attr-defined]
    with db.write() as session:
        result = session.execute(
            insert_ignoring_conflicts(session, table, "id", returning="id"),
            [product.model_dump() for product in CATALOGUE],
        )
        return len(result.all())


@dataclass(frozen=True)
class NewOrder:
    """A checked CreateOrder request.

    `trace` is the trace context of the call that made it (taken where it is made: the
    RPC's thread, inside its server span); the group committer writes many requests on
    its own thread, and each order's OrderPurchased carries its own call's context.
    """

    user_id: int
    product_id: int
    request_id: str
    trace: tuple[tuple[str, bytes], ...] = field(
        default_factory=tracing.current_headers, compare=False, repr=False
    )


def create_orders(
    session: Transaction, requests: Sequence[NewOrder], *, deadline_s: float
) -> list[OrderRow | Exception]:
    """Store CREATED orders with their events and saga deadlines, in the caller's transaction.

    Answers each request, in order, with its order or the exception that rejects it
    (UnknownProduct, RequestIdReused); a rejected request writes nothing. A request_id is
    the caller's idempotency key, scoped to its user: INSERT ... ON CONFLICT lets the
    database settle a retry that raced here from another replica, and a key seen before
    (committed, or earlier in `requests`) answers with that order.
    """
    product_ids = {r.product_id for r in requests}
    found = _SELECT_PRICES.rows(session, {"product_ids": list(product_ids)})
    prices: dict[int, int] = {product_id: price for product_id, price in found}
    candidates: dict[tuple[int, str], OrderRow] = {}
    for request in requests:
        price = prices.get(request.product_id)
        key = (request.user_id, request.request_id)
        if price is None or key in candidates:
            continue
        now = utcnow()
        candidates[key] = {
            "id": time_ordered_uuid(),
            "user_id": request.user_id,
            "product_id": request.product_id,
            "price_cents": price,
            "status": Status.CREATED.value,
            "failure_reason": "",
            "request_id": request.request_id,
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
    created_ids: set[str] = set()
    if candidates:
        # Sorted by key: two replicas inserting the same keys lock them in one order.
        ordered = [candidates[key] for key in sorted(candidates)]
        created_ids = set(_INSERT_ORDERS.execute(session, ordered))
    existing = _orders_by_key(
        session, [k for k, o in candidates.items() if o["id"] not in created_ids]
    )
    created = [o for o in candidates.values() if o["id"] in created_ids]
    traces = {(r.user_id, r.request_id): r.trace for r in requests}
    _stage_new_orders(session, created, deadline_s, traces)
    answers: list[OrderRow | Exception] = []
    for request in requests:
        key = (request.user_id, request.request_id)
        if request.product_id not in prices:
            answers.append(
                UnknownProduct(f"product {request.product_id} does not exist in the catalogue")
            )
            continue
        order = existing.get(key) or candidates[key]
        answers.append(_same_request(order, request))
    return answers


def _orders_by_key(
    session: Transaction, keys: list[tuple[int, str]]
) -> dict[tuple[int, str], OrderRow]:
    """The stored orders of these (user_id, request_id) keys."""
    if not keys:
        return {}
    query = sa_select(ORDERS_TABLE).where(
        tuple_(ORDERS_TABLE.c.user_id, ORDERS_TABLE.c.request_id).in_(keys)
    )
    return {
        (row["user_id"], row["request_id"]): dict(row) for row in session.execute(query).mappings()
    }


def _stage_new_orders(
    session: Transaction,
    created: list[OrderRow],
    deadline_s: float,
    traces: dict[tuple[int, str], tuple[tuple[str, bytes], ...]],
) -> None:
    """The new orders' OrderPurchased and OrderUpdated events, and their saga deadlines (which
    each OrderPurchased carries too); each order's events carry the trace context of its
    CreateOrder call (`traces`)."""
    if not created:
        return
    outbox = OutboxWriter(SAGA_TOPICS)
    lifetime = timedelta(seconds=deadline_s)
    due = [{"order_id": o["id"], "due_at": o["created_at"] + lifetime} for o in created]
    for order, deadline in zip(created, due, strict=True):
        event = events_pb2.OrderPurchased(
            order_id=order["id"],
            user_id=order["user_id"],
            product_id=order["product_id"],
            amount_cents=order["price_cents"],
            create_time=to_timestamp(order["created_at"]),
            # The Payment service never charges a purchase that reaches it after this.
            deadline_time=to_timestamp(deadline["due_at"]),
        )
        trace = traces.get((order["user_id"], order["request_id"]), ())
        outbox.add_event(event, key=order["user_id"], subject=order["id"], trace=trace)
        announce(outbox, order, trace=trace)
    _INSERT_DEADLINES.execute(session, due)
    outbox.write(session)
    metrics.orders_created_after_commit(session, len(created))


def _same_request(existing: OrderRow, request: NewOrder) -> OrderRow | Exception:
    """The order a retried request_id names, or why the request may not reuse it."""
    if existing["product_id"] == request.product_id:
        return existing
    return RequestIdReused(
        f"request_id {request.request_id!r} was already used for another order: "
        "use a new request_id for a new order"
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


def orders_in_flight(session: Session, *, user_id: int) -> Sequence[Order]:
    """Orders not yet terminal (CREATED), oldest first; of one user, or of all if 0."""
    query = select(Order).where(Order.status == Status.CREATED.value)
    if user_id:
        query = query.where(Order.user_id == user_id)
    return session.exec(query.order_by(col(Order.created_at), col(Order.id))).all()
