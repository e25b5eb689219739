"""The journal purge: old saga steps go in small batches, young ones stay, no scan when
nothing is old."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlmodel import col

from services.common.messaging.journal import SagaStep
from services.common.operations.retention import JournalPurge
from services.common.persistence.db import Database
from services.common.timeutil import utcnow


def _step(order_id: str, age_days: float) -> SagaStep:
    return SagaStep(
        order_id=order_id,
        kind="APPLIED",
        topic="orders",
        event_id=f"e-{order_id}",
        event_type="paysaga.v1.OrderPurchased",
        recorded_at=utcnow() - timedelta(days=age_days),
        replica="order-0",
        detail="",
    )


def test_old_journal_steps_are_purged_and_young_ones_kept(store_url: str) -> None:
    db = Database(store_url)
    db.create_tables([SagaStep])
    with db.write() as session:  # ids grow with time, as the services write them
        session.add_all([_step(f"old-{i}", 100 - i) for i in range(5)])
        session.add_all([_step(f"young-{i}", 1) for i in range(2)])
    purge = JournalPurge(db, retention_days=90, batch_size=2)
    while purge():
        pass
    assert purge.purged == 5
    assert purge() == 0  # nothing old left: answered from the oldest row alone
    with db.read() as session:
        left = set(session.execute(select(col(SagaStep.order_id))).scalars())
    assert left == {"young-0", "young-1"}
    db.dispose()
