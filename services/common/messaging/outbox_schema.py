"""The outbox's migration steps shared by both services' Alembic histories.

Both services hold the same outbox (services.common.messaging.outbox); each service's
migration calls these, so the two histories cannot drift apart.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op


def add_outbox_claims() -> None:
    """The relay's leases (services.common.messaging.claims): who holds a row, until when."""
    with op.batch_alter_table("outbox") as batch:
        batch.add_column(sa.Column("claimed_by", sqlmodel.sql.sqltypes.AutoString(), nullable=True))
        batch.add_column(
            sa.Column("claimed_until", sqlmodel.sql.sqltypes.UTCDateTime(), nullable=True)
        )


def drop_outbox_claims() -> None:
    # SQLite drops a column by copying the table: keep its AUTOINCREMENT (a seq is never
    # used twice, services.common.messaging.outbox).
    with op.batch_alter_table("outbox", table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.drop_column("claimed_until")
        batch.drop_column("claimed_by")
