"""Saga deadlines: an order not terminal `deadline_s` after its creation is FAILED.

CreateOrder writes each order's deadline row in the order's own transaction, and the
order's end deletes it, so the table holds exactly the sagas in flight: it survives
restarts, and with N replicas each due row is claimed by one replica at a time
(`FOR UPDATE SKIP LOCKED`). Failing the order goes through the outbox like every other
change: OrderFailed tells the Payment service to give back any money it took.
"""

from __future__ import annotations

import logging

from sqlalchemy import delete, select
from sqlmodel import col

from services.common.db import Database
from services.common.outbox import OutboxWriter
from services.common.timeutil import utcnow
from services.order.domain import Status, deadline_reason
from services.order.handlers import write_order_changes
from services.order.models import ORDERS_TABLE, OrderRow, SagaDeadline

log = logging.getLogger(__name__)


def expire_due(db: Database, *, deadline_s: float, batch_size: int = 500) -> int:
    """Fail the CREATED orders whose deadline passed (one batch); return how many were due."""
    now = utcnow()
    with db.write() as session:
        due = list(
            session.execute(
                select(col(SagaDeadline.order_id))
                .where(col(SagaDeadline.due_at) <= now)
                .order_by(col(SagaDeadline.due_at))
                .limit(batch_size)
                .with_for_update(skip_locked=True)
            ).scalars()
        )
        if not due:
            return 0
        found = session.execute(
            select(ORDERS_TABLE)
            .where(ORDERS_TABLE.c.id.in_(due))
            .where(ORDERS_TABLE.c.status == Status.CREATED.value)
            .with_for_update()  # an order finishing on another replica now: wait, skip it
        )
        expired: list[OrderRow] = []
        for row in found.mappings():
            order = dict(row)
            order.update(
                status=Status.FAILED.value,
                failure_reason=deadline_reason(deadline_s),
                updated_at=now,
            )
            expired.append(order)
            log.warning("saga deadline passed; order failed", extra={"order_id": order["id"]})
        session.execute(delete(SagaDeadline).where(col(SagaDeadline.order_id).in_(due)))
        outbox = OutboxWriter()
        write_order_changes(session, outbox, expired, {o["id"] for o in expired})
        outbox.write(session)
    return len(due)
