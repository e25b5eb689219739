"""The outbox's storage settings on PostgreSQL: room for HOT lease updates, autovacuum due
at 1,000 dead rows and without pauses.

The outbox is a queue table: rows are inserted, leased and deleted within moments, and
the relay's claim walks it from its oldest row. See services.common.messaging.outbox_schema:
both services' histories set the same settings. Nothing changes on SQLite. Safe on a busy
table: reads and writes go on while it runs, and the table is not rewritten.

Revision ID: 0004_outbox_storage
Revises: 0003_outbox_claims
Create Date: 2026-12-07
"""

from collections.abc import Sequence

from services.common.messaging.outbox_schema import reset_outbox_storage, set_outbox_storage

revision: str = "0004_outbox_storage"
down_revision: str | None = "0003_outbox_claims"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    set_outbox_storage()


def downgrade() -> None:
    reset_outbox_storage()
