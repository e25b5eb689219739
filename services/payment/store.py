"""Payment persistence: seeding balances, reading balances and transactions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlmodel import Session, col, select

from services.common.db import Database
from services.common.paging import Cursor, newest_first_after
from services.payment.models import STARTING_BALANCES, Account, Transaction


def seed_accounts(db: Database) -> None:
    """Create the seed users that are missing (first start)."""
    with db.write() as session:
        for user_id, balance in STARTING_BALANCES.items():
            if session.get(Account, user_id) is None:
                session.add(Account(user_id=user_id, balance_cents=balance))


def list_transactions(
    *, session: Session, user_id: int, order_id: str, after: Cursor | None, limit: int
) -> Sequence[Transaction]:
    """Transactions newest first, optionally of one user / one order, after a cursor."""
    query = select(Transaction)
    if user_id:
        query = query.where(Transaction.user_id == user_id)
    if order_id:
        query = query.where(Transaction.order_id == order_id)
    query = query.where(newest_first_after(col(Transaction.created_at), col(Transaction.id), after))
    query = query.order_by(col(Transaction.created_at).desc(), col(Transaction.id).desc())
    return session.exec(query.limit(limit)).all()
