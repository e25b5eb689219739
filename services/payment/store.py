"""Payment persistence: seeding balances, reading balances and transactions."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Table
from sqlmodel import Session, col, select

from services.common.persistence.db import Database, insert_ignoring_conflicts
from services.common.serving.paging import Cursor, newest_first_after
from services.common.timeutil import utcnow
from services.payment.models import STARTING_BALANCES, Account, Transaction


def seed_accounts(db: Database) -> int:
    """Create the demo users that are missing, funded; return how many were added.

    A development step only (make seed): a production start never credits anyone.
    Idempotent and safe when several replicas seed at once (ON CONFLICT DO NOTHING).
    """
    table: Table = Account.__table__  # type: ignore[attr-defined]
    now = utcnow()
    rows = [
        {"user_id": user_id, "balance_cents": balance, "updated_at": now}
        for user_id, balance in STARTING_BALANCES.items()
    ]
    with db.write() as session:
        result = session.execute(
            insert_ignoring_conflicts(session, table, "user_id").returning(table.c.user_id), rows
        )
        return len(result.all())


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
