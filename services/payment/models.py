"""Payment service tables: balances, one payment decision per order, recorded transactions."""

from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import CheckConstraint
from sqlmodel import Field, Index, SQLModel

from services.common.timeutil import utcnow


class Account(SQLModel, table=True):
    """A user's balance. The check constraint is the last guard against an overdraft."""

    __tablename__ = "account"
    __table_args__ = (CheckConstraint("balance_cents >= 0", name="balance_not_negative"),)

    user_id: int = Field(primary_key=True)
    balance_cents: int
    updated_at: datetime = Field(default_factory=utcnow)


class Payment(SQLModel, table=True):
    """The payment decision for one order: keyed by order id, so no order is charged twice."""

    __tablename__ = "payment"

    order_id: str = Field(primary_key=True)
    user_id: int
    amount_cents: int
    approved: bool
    reason: str = ""
    created_at: datetime = Field(default_factory=utcnow)


class Transaction(SQLModel, table=True):
    """Money taken for one completed order (at most one per order)."""

    __tablename__ = "transaction"
    __table_args__ = (
        Index("ix_transaction_user_created", "user_id", "created_at", "id"),
        Index("ix_transaction_created", "created_at", "id"),
    )

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True)
    order_id: str = Field(unique=True)
    user_id: int
    amount_cents: int
    created_at: datetime = Field(default_factory=utcnow)


#: Seeded on first start: users 1..5 (balances in cents).
STARTING_BALANCES = {1: 10000, 2: 20000, 3: 50000, 4: 100000, 5: 200000}
