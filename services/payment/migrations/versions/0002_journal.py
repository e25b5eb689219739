"""The saga journal (saga_step, dead_letter, dead_letter_redrive) and the inbox's age index.

See services.common.messaging.journal_schema: both services' histories create the same tables.

Revision ID: 0002_journal
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

from services.common.messaging.journal_schema import create_journal_tables, drop_journal_tables

revision: str = "0002_journal"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    create_journal_tables()


def downgrade() -> None:
    drop_journal_tables()
