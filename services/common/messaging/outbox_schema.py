"""The outbox's migration steps shared by both services' Alembic histories.

Both services hold the same outbox (services.common.messaging.outbox); each service's
migration calls these, so the two histories cannot drift apart.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

#: PostgreSQL's storage settings for the outbox, a queue table: every row is inserted, leased
#: (an UPDATE, again on a renewal or a retry) and deleted within moments. `fillfactor`: half
#: of each page stays free, so a lease's UPDATE finds room on the row's own page and is a
#: heap-only (HOT) update, adding no index entries. That holds while no index (a partial
#: index's WHERE included) reads `claimed_by` or `claimed_until`. The autovacuum settings
#: make it due once more than 1,000 rows are dead, whatever its size, and vacuumed without
#: pauses: the relay's claim walks the primary key from the oldest row, past every dead
#: entry not vacuumed yet. Due is not done: in a two-minute run no vacuum of it finished.
#: How often autovacuum looks is the server's `autovacuum_naptime`; at one second instead
#: of the default minute PostgreSQL spent a quarter more CPU an order and nothing was
#: measurably faster (docs/performance.md, window 14).
OUTBOX_STORAGE = {
    "fillfactor": "50",
    "autovacuum_vacuum_scale_factor": "0",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_vacuum_cost_delay": "0",
}


def set_outbox_storage() -> None:
    """Give the outbox OUTBOX_STORAGE on PostgreSQL (SQLite has no such settings).

    The statement takes a SHARE UPDATE EXCLUSIVE lock, which reads and writes do not wait
    for, and rewrites nothing: the fillfactor applies to the pages filled from then on."""
    if not _on_postgresql():
        return
    settings = ", ".join(f"{name} = {value}" for name, value in OUTBOX_STORAGE.items())
    op.execute(f"ALTER TABLE outbox SET ({settings})")


def reset_outbox_storage() -> None:
    """Give the outbox PostgreSQL's default storage settings back."""
    if not _on_postgresql():
        return
    op.execute(f"ALTER TABLE outbox RESET ({', '.join(OUTBOX_STORAGE)})")


def _on_postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


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
