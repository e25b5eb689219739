"""Parking an outbox row Kafka will not take: moved to `outbox_parked` with its error, so the
rows after it flow on. An operator puts it back by hand (see docs/operations.md)."""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy import delete, insert
from sqlmodel import col

from services.common.messaging.outbox import ClaimedRow, OutboxRecord, ParkedRecord
from services.common.persistence.transaction import Transaction
from services.common.timeutil import utcnow

log = logging.getLogger("services.common.messaging.relay")


def rows_changed(result: Any) -> int:
    """How many rows an UPDATE or DELETE changed."""
    return int(result.rowcount)


def park(session: Transaction, row: ClaimedRow, attempts: int, error: str, still_ours: Any) -> int:
    """Move `row` to outbox_parked if `still_ours` (a condition on its lease) holds; return
    1 if it was parked, 0 if another relay took the row over (it is theirs to settle)."""
    taken = session.execute(
        delete(OutboxRecord).where(col(OutboxRecord.seq) == row.seq).where(still_ours)
    )
    if not rows_changed(taken):
        return 0
    session.execute(
        insert(ParkedRecord).values(
            seq=row.seq,
            event_id=row.event_id,
            topic=row.topic,
            key=row.key,
            value=row.value,
            headers=row.headers,
            created_at=row.created_at,
            attempts=attempts,
            error=error[:2000],
            parked_at=utcnow(),
        )
    )
    log.error(
        "outbox record parked: Kafka will not take it; the rows after it go on",
        extra={
            "seq": row.seq,
            "event_id": row.event_id,
            "topic": row.topic,
            "attempts": attempts,
            "error": error,
        },
    )
    return 1
