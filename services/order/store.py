"""Order persistence: creating an order with its event, reading and listing orders."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from sqlmodel import Session, col, select

from paysaga.v1 import events_pb2
from services.common.db import Database, run_after_commit
from services.common.outbox import add_event
from services.common.paging import Cursor, newest_first_after
from services.common.timeutil import to_timestamp
from services.order.domain import Status
from services.order.models import CATALOGUE, Order, Product


class UnknownProduct(LookupError):
    """No product with that id in the catalogue."""


class RequestIdReused(ValueError):
    """A request_id already used for a different order request."""


#: What create_order raises for a request the caller must fix (the rest are failures).
CREATE_REJECTIONS: tuple[type[Exception], ...] = (UnknownProduct, RequestIdReused)


def seed_catalogue(db: Database) -> None:
    """Insert the catalogue's products that are missing (first start)."""
    with db.write() as session:
        for product in CATALOGUE:
            if session.get(Product, product.id) is None:
                session.add(Product.model_validate(product.model_dump()))


def create_order(
    *,
    session: Session,
    user_id: int,
    product_id: int,
    request_id: str,
    on_change: Callable[[Order], None],
) -> tuple[Order, bool]:
    """Store a CREATED order and stage its OrderPurchased event, in the caller's transaction.

    Returns (order, created). With a request_id seen before, returns that order and False.
    """
    if request_id:
        existing = session.exec(select(Order).where(Order.request_id == request_id)).first()
        if existing is not None:
            if (existing.user_id, existing.product_id) != (user_id, product_id):
                raise RequestIdReused(
                    f"request_id {request_id!r} was already used for an order of user "
                    f"{existing.user_id} for product {existing.product_id}: use a new request_id"
                )
            return existing, False
    product = session.get(Product, product_id)
    if product is None:
        raise UnknownProduct(f"product {product_id} does not exist in the catalogue")
    order = Order(
        user_id=user_id,
        product_id=product_id,
        price_cents=product.price_cents,
        status=Status.CREATED,
        request_id=request_id or None,
    )
    session.add(order)
    event = events_pb2.OrderPurchased(
        order_id=order.id,
        user_id=user_id,
        product_id=product_id,
        amount_cents=product.price_cents,
        create_time=to_timestamp(order.created_at),
    )
    add_event(session, event, key=user_id, subject=order.id)
    run_after_commit(session, lambda: on_change(order))
    return order, True


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
