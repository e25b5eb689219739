"""The saga journal's tables as migration steps, shared by both services' Alembic histories.

Both services hold the same journal tables (services.common.messaging.journal) and index the inbox
by age for its retention purge (services.common.operations.retention); each service's migration
calls these, so the two histories cannot drift apart.
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel.sql.sqltypes
from alembic import op

_BIGINT = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_TEXT = sqlmodel.sql.sqltypes.AutoString
_TIME = sqlmodel.sql.sqltypes.UTCDateTime


def create_journal_tables() -> None:
    op.create_table(
        "saga_step",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("order_id", _TEXT(), nullable=False),
        sa.Column("kind", _TEXT(), nullable=False),
        sa.Column("topic", _TEXT(), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=True),
        sa.Column("kafka_offset", _BIGINT, nullable=True),
        sa.Column("event_id", _TEXT(), nullable=False),
        sa.Column("event_type", _TEXT(), nullable=False),
        sa.Column("produced_at", _TIME(), nullable=True),
        sa.Column("recorded_at", _TIME(), nullable=False),
        sa.Column("replica", _TEXT(), nullable=False),
        sa.Column("detail", _TEXT(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_saga_step_order", "saga_step", ["order_id", "recorded_at"])
    op.create_table(
        "dead_letter",
        sa.Column("id", _TEXT(), nullable=False),
        sa.Column("topic", _TEXT(), nullable=False),
        sa.Column("kafka_partition", sa.Integer(), nullable=False),
        sa.Column("kafka_offset", _BIGINT, nullable=False),
        sa.Column("event_id", _TEXT(), nullable=False),
        sa.Column("event_type", _TEXT(), nullable=False),
        sa.Column("order_id", _TEXT(), nullable=False),
        sa.Column("reason", _TEXT(), nullable=False),
        sa.Column("key", sa.LargeBinary(), nullable=True),
        sa.Column("value", sa.LargeBinary(), nullable=True),
        sa.Column("headers", sa.LargeBinary(), nullable=False),
        sa.Column("dead_lettered_at", _TIME(), nullable=False),
        sa.Column("redrive_count", sa.Integer(), nullable=False),
        sa.Column("redriven_at", _TIME(), nullable=True),
        sa.Column("redriven_by", _TEXT(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_dead_letter_order_id"), "dead_letter", ["order_id"])
    op.create_index(op.f("ix_dead_letter_dead_lettered_at"), "dead_letter", ["dead_lettered_at"])
    op.create_table(
        "dead_letter_redrive",
        sa.Column("id", _BIGINT, nullable=False),
        sa.Column("dead_letter_id", _TEXT(), nullable=False),
        sa.Column("redrive_id", _TEXT(), nullable=False),
        sa.Column("redriven_at", _TIME(), nullable=False),
        sa.Column("redriven_by", _TEXT(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_dead_letter_redrive_dead_letter_id"), "dead_letter_redrive", ["dead_letter_id"]
    )
    op.create_index(op.f("ix_inbox_processed_at"), "inbox", ["processed_at"])


def drop_journal_tables() -> None:
    op.drop_index(op.f("ix_inbox_processed_at"), table_name="inbox")
    op.drop_table("dead_letter_redrive")
    op.drop_table("dead_letter")
    op.drop_table("saga_step")
