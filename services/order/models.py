"""Order service tables: the product catalogue and the orders."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Table, text
from sqlmodel import Field, Index, SQLModel, UniqueConstraint

from services.common.ids import time_ordered_uuid
from services.common.persistence.columns import int64
from services.common.timeutil import utcnow


class Product(SQLModel, table=True):
    """A product in the catalogue; its price is what an order of it costs."""

    __tablename__ = "product"

    id: int = int64(primary_key=True)
    name: str
    price_cents: int = int64()


#: A FAILED order whose charge the service has seen and whose refund it has not: money held.
HELD_MONEY = "status = 'FAILED' AND charged_at IS NOT NULL AND refunded_at IS NULL"


class Order(SQLModel, table=True):
    """One order and where it stands in its saga."""

    __tablename__ = "orders"
    __table_args__ = (
        Index("ix_orders_created", "created_at", "id"),
        Index("ix_orders_user_created", "user_id", "created_at", "id"),
        # Holds only the orders whose money is held (normally none): the re-announcement
        # worker and `paysaga orders held` read it without scanning the FAILED orders.
        Index(
            "ix_orders_held",
            "charged_at",
            postgresql_where=text(HELD_MONEY),
            sqlite_where=text(HELD_MONEY),
        ),
        # A request_id is the caller's idempotency key, scoped to its user: another
        # user's key never collides, so it reveals nothing about their orders.
        UniqueConstraint("user_id", "request_id", name="uq_orders_user_request"),
    )

    id: str = Field(default_factory=time_ordered_uuid, primary_key=True)
    user_id: int = int64()
    product_id: int = int64()
    price_cents: int = int64()
    #: CREATED, COMPLETED or FAILED (services.order.domain.Status).
    status: str = Field(index=True)
    failure_reason: str = ""
    request_id: str | None = None
    #: 1 when created, one more with every change (WatchOrders sends each version once).
    version: int = int64(default=1, sa_column_kwargs={"server_default": "1"})
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)
    #: When the Order service applied the CHARGE of this order (null: none seen, or the
    #: order ended before this column existed).
    charged_at: datetime | None = None
    #: When it applied the REFUND of this order's charge (null: none seen).
    refunded_at: datetime | None = None
    #: When OrderFailed was last announced again because the charge had no refund
    #: (services.order.refunds); null: never.
    refund_reannounced_at: datetime | None = None


class SagaDeadline(SQLModel, table=True):
    """When a CREATED order's saga must have ended; deleted once the order is terminal."""

    __tablename__ = "saga_deadline"

    order_id: str = Field(primary_key=True)
    due_at: datetime = Field(index=True)


#: An order's column values by name. The hot paths (creating and finishing orders in
#: groups) pass these around instead of ORM objects, which cost far more to build.
OrderRow = dict[str, Any]

#: The tables, for Core statements on those paths.
ORDERS_TABLE: Table = Order.__table__  # type: ignore[attr-defined]
DEADLINES_TABLE: Table = SagaDeadline.__table__  # type: ignore[attr-defined]
PRODUCTS_TABLE: Table = Product.__table__  # type: ignore[attr-defined]


#: Seeded by `python -m services.order seed` (make seed): products 1..5 (prices in cents).
CATALOGUE = [
    Product(id=1, name="Product 1", price_cents=5000),
    Product(id=2, name="Product 2", price_cents=7500),
    Product(id=3, name="Product 3", price_cents=10000),
    Product(id=4, name="Product 4", price_cents=50000),
    Product(id=5, name="Product 5", price_cents=100000),
]
