"""Orders record the money the Order service has seen: when their charge and their refund
were applied, and when OrderFailed was last announced again for a charge with no refund.

`ix_orders_held` is partial: it holds only FAILED orders charged and not refunded (money
held), which the re-announcement worker and `paysaga orders held` read. Orders that ended
before this revision keep null columns: their money is not tracked here (the Payment
service's records still are).

Revision ID: 0004_order_money
Revises: 0003_journal
Create Date: 2026-11-27
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

revision: str = "0004_order_money"
down_revision: str | None = "0003_journal"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_HELD = "status = 'FAILED' AND charged_at IS NOT NULL AND refunded_at IS NULL"
_COLUMNS = ("charged_at", "refunded_at", "refund_reannounced_at")


def upgrade() -> None:
    with op.batch_alter_table("orders") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True))
    op.create_index(
        "ix_orders_held",
        "orders",
        ["charged_at"],
        unique=False,
        postgresql_where=sa.text(_HELD),
        sqlite_where=sa.text(_HELD),
    )


def downgrade() -> None:
    op.drop_index("ix_orders_held", table_name="orders")
    with op.batch_alter_table("orders") as batch:
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
