"""The Payment handlers' statements (services.payment.handlers), built once.

Plain rows and Core statements: ORM objects and their flush cost several times more per
event. New payments and transactions go in as the outbox's rows do
(persistence.bulk.BulkInsert); the selects and updates run as `Prepared` statements
(persistence.prepared); both on the driver's cursor.
"""

from __future__ import annotations

from sqlalchemy import Table, bindparam, select, update

from services.common.persistence.bulk import BulkInsert
from services.common.persistence.prepared import Prepared
from services.payment.models import CHARGE, REFUND, Account, Payment, Transaction

ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]
PAYMENTS: Table = Payment.__table__  # type: ignore[attr-defined]
TRANSACTIONS: Table = Transaction.__table__  # type: ignore[attr-defined]

# Every column, named: the handlers build the rows by hand.
INSERT_PAYMENTS = BulkInsert(
    PAYMENTS,
    ("order_id", "user_id", "amount_cents", "approved", "reason", "refunded_at", "created_at"),
)
INSERT_TRANSACTIONS = BulkInsert(
    TRANSACTIONS, ("id", "order_id", "kind", "user_id", "amount_cents", "created_at")
)
SELECT_PAYMENTS = Prepared(
    select(PAYMENTS).where(PAYMENTS.c.order_id.in_(bindparam("order_ids", expanding=True))),
    expanding=["order_ids"],
)
# Locked for the transaction where the database can (SELECT ... FOR UPDATE); on SQLite
# the write transaction (BEGIN IMMEDIATE) already excludes other writers.
SELECT_ACCOUNTS = Prepared(
    select(ACCOUNTS.c.user_id, ACCOUNTS.c.balance_cents)
    .where(ACCOUNTS.c.user_id.in_(bindparam("user_ids", expanding=True)))
    # Sorted before locking: two replicas lock the same accounts in one order.
    .order_by(ACCOUNTS.c.user_id)
    .with_for_update(),
    expanding=["user_ids"],
)
UPDATE_BALANCE = Prepared(
    update(ACCOUNTS)
    .where(ACCOUNTS.c.user_id == bindparam("account_user_id"))
    .values(balance_cents=bindparam("balance_cents"), updated_at=bindparam("updated_at"))
)
MARK_REFUNDED = Prepared(
    update(PAYMENTS)
    .where(PAYMENTS.c.order_id == bindparam("payment_order_id"))
    .where(PAYMENTS.c.refunded_at.is_(None))
    .values(refunded_at=bindparam("refunded_at"))
)
SELECT_CHARGES = Prepared(
    select(TRANSACTIONS.c.order_id, TRANSACTIONS.c.id).where(
        TRANSACTIONS.c.order_id.in_(bindparam("order_ids", expanding=True)),
        TRANSACTIONS.c.kind == CHARGE,
    ),
    expanding=["order_ids"],
)
SELECT_REFUND = Prepared(
    select(TRANSACTIONS.c.id).where(
        TRANSACTIONS.c.order_id == bindparam("order_id"), TRANSACTIONS.c.kind == REFUND
    )
)
