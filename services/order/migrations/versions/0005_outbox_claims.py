"""Outbox rows carry the relay's lease: who claimed a row to publish it, and until when.

On PostgreSQL a relay claims rows by writing its lease and commits at once, instead of
holding a transaction open while Kafka answers (services.common.messaging.claims). Existing
rows start unclaimed. See services.common.messaging.outbox_schema: both services' histories
add the same columns.

Revision ID: 0005_outbox_claims
Revises: 0004_order_money
Create Date: 2026-12-05
"""

from collections.abc import Sequence

from services.common.messaging.outbox_schema import add_outbox_claims, drop_outbox_claims

revision: str = "0005_outbox_claims"
down_revision: str | None = "0004_order_money"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    add_outbox_claims()


def downgrade() -> None:
    drop_outbox_claims()
