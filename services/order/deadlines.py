"""Saga deadlines: an order not terminal `deadline_s` after its creation is FAILED.

CreateOrder writes each order's deadline row in the order's own transaction, and the
order's end deletes it, so the table holds exactly the sagas in flight: it survives
restarts, and with N replicas each due row is claimed by one replica at a time
(`FOR UPDATE SKIP LOCKED`). Failing the order goes through the outbox like every other
change: OrderFailed tells the Payment service to give back any money it took.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import delete, select
from sqlmodel import col

from services.common.messaging.outbox import OutboxWriter
from services.common.persistence.db import Database
from services.common.timeutil import utcnow
from services.order.domain import Status, deadline_reason
from services.order.handlers import write_order_changes
from services.order.models import ORDERS_TABLE, OrderRow, SagaDeadline
from services.saga.topics import SAGA_TOPICS

log = logging.getLogger(__name__)


def expire_due(db: Database, *, deadline_s: float, batch_size: int = 500) -> int:
    """Fail the CREATED orders whose deadline passed (one batch); return how many were due.

    Locks are taken in the order the consumer takes them (the order row, then its
    deadline), and orders another transaction holds are skipped (`SKIP LOCKED`): a
    replica finishing an order right now wins, and two replicas never wait on each other.
    """
    now = utcnow()
    with db.write() as session:
        due = list(
            session.execute(
                select(col(SagaDeadline.order_id))
                .where(col(SagaDeadline.due_at) <= now)
                .order_by(col(SagaDeadline.due_at))
                .limit(batch_size)
            ).scalars()
        )
        if not due:
            return 0
        found = session.execute(
            select(ORDERS_TABLE)
            .where(ORDERS_TABLE.c.id.in_(due))
            .where(ORDERS_TABLE.c.status == Status.CREATED.value)
            .with_for_update(skip_locked=True)
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
        # Deadlines of orders that ended already (without deleting theirs) are spent too.
        ended = select(ORDERS_TABLE.c.id).where(
            ORDERS_TABLE.c.id.in_(due), ORDERS_TABLE.c.status != Status.CREATED.value
        )
        session.execute(delete(SagaDeadline).where(col(SagaDeadline.order_id).in_(ended)))
        outbox = OutboxWriter(SAGA_TOPICS)
        write_order_changes(session, outbox, expired, {o["id"] for o in expired})
        outbox.write(session)
    return len(expired)


class SagaDeadlines:
    """The deadline worker: expires due orders once this replica's consumer has caught up.

    Until the consumer has read everything waiting on its partitions once (after a start,
    or a broker outage), an outcome may be waiting there: failing its order first would
    refund a paid order for nothing.
    """

    def __init__(
        self, db: Database, *, deadline_s: float, consumer_caught_up: Callable[[], bool]
    ) -> None:
        self.db = db
        self.deadline_s = deadline_s
        self.consumer_caught_up = consumer_caught_up

    def __call__(self) -> int:
        if not self.consumer_caught_up():
            return 0
        return expire_due(self.db, deadline_s=self.deadline_s)
