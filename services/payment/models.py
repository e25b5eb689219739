"""Payment service tables: balances, one payment decision per order, recorded transactions."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, UniqueConstraint
from sqlmodel import Field, Index, SQLModel

from services.common.ids import time_ordered_uuid
from services.common.persistence.columns import int64
from services.common.timeutil import utcnow


class Account(SQLModel, table=True):
    """A user's balance. The check constraint is the last guard against an overdraft."""

    __tablename__ = "account"
    __table_args__ = (CheckConstraint("balance_cents >= 0", name="balance_not_negative"),)

    user_id: int = int64(primary_key=True)
    balance_cents: int = int64()
    updated_at: datetime = Field(default_factory=utcnow)


class Payment(SQLModel, table=True):
    """The payment decision for one order: keyed by order id, so no order is charged twice.

    An order that FAILED before its payment was decided gets a declined Payment too, so a
    late OrderPurchased never charges it.
    """

    __tablename__ = "payment"

    order_id: str = Field(primary_key=True)
    user_id: int = int64()
    amount_cents: int = int64()
    approved: bool
    reason: str = ""
    #: Set when the money taken for this order was given back (the order FAILED).
    refunded_at: datetime | None = None
    created_at: datetime = Field(default_factory=utcnow)


class Transaction(SQLModel, table=True):
    """Money taken for an order (CHARGE) or given back for it (REFUND): at most one of each."""

    __tablename__ = "transaction"
    __table_args__ = (
        Index("ix_transaction_user_created", "user_id", "created_at", "id"),
        Index("ix_transaction_created", "created_at", "id"),
        UniqueConstraint("order_id", "kind", name="uq_transaction_order_kind"),
    )

    id: str = Field(default_factory=time_ordered_uuid, primary_key=True)
    order_id: str
    #: CHARGE or REFUND.
    kind: str = "CHARGE"
    user_id: int = int64()
    amount_cents: int = int64()
    created_at: datetime = Field(default_factory=utcnow)


#: Transaction kinds (Transaction.kind).
CHARGE = "CHARGE"
REFUND = "REFUND"

#: Seeded by `python -m services.payment seed` (make seed): users 1..5 (balances in cents).
STARTING_BALANCES = {1: 10000, 2: 20000, 3: 50000, 4: 100000, 5: 200000}
