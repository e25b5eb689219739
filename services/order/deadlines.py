"""Saga deadlines: an order not terminal `deadline_s` after its creation is FAILED, unless
its outcome is already waiting in Kafka.

CreateOrder writes each order's deadline row in the order's own transaction, and the
order's end deletes it, so the table holds exactly the sagas in flight: it survives
restarts, and with N replicas each due row is claimed by one replica at a time
(`FOR UPDATE SKIP LOCKED`). Failing the order goes through the outbox like every other
change: OrderFailed tells the Payment service to give back any money it took.

An order's outcome (TransactionRecorded, keyed by the order's user) arrives on one
partition of `transactions`. A replica fails a due order only if it holds that partition
and has applied every record that was on it when the round began (its consumer's
`caught_up_partitions`, asked afresh each round): an outcome already waiting there is
applied first and wins. The replicas of the group hold every partition between them, so
each due order is failed by the one holding its partition; a partition held by nobody
(during a rebalance), or lagging, or out of reach (a broker outage) waits.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import and_, delete, or_, select
from sqlmodel import Session, col

from services.common.messaging.catchup import CaughtUpPartitions
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.kafka import partition_for_key
from services.common.messaging.outbox import OutboxWriter
from services.common.persistence.db import Database
from services.common.timeutil import utcnow
from services.order.domain import Status, deadline_reason
from services.order.handlers import write_order_changes
from services.order.models import DEADLINES_TABLE, ORDERS_TABLE, OrderRow, SagaDeadline
from services.saga.topics import SAGA_TOPICS, TRANSACTIONS

log = logging.getLogger(__name__)

#: Asks a consumer which partitions of a topic it holds and has applied (None: unknown).
CaughtUpReader = Callable[[str], CaughtUpPartitions | None]

_DUE = (
    select(DEADLINES_TABLE.c.order_id, DEADLINES_TABLE.c.due_at, ORDERS_TABLE.c.user_id)
    .join(ORDERS_TABLE, ORDERS_TABLE.c.id == DEADLINES_TABLE.c.order_id)
    .order_by(DEADLINES_TABLE.c.due_at, DEADLINES_TABLE.c.order_id)
)


def outcome_partition(user_id: int, partition_count: int) -> int:
    """The partition of `transactions` an order's outcome arrives on: the outbox keys it by
    the order's user (`str(user_id)`), and the producers partition by key."""
    return partition_for_key(str(user_id).encode(), partition_count)


def due_orders(
    session: Session,
    *,
    due_by: datetime,
    covers: Callable[[int], bool] | None,
    limit: int,
) -> list[str]:
    """Ids of up to `limit` orders whose deadline is at or before `due_by`, oldest deadline
    first, of the users `covers` accepts (None: of every user)."""
    found: list[str] = []
    after: tuple[datetime, str] | None = None
    while len(found) < limit:
        query = _DUE.where(DEADLINES_TABLE.c.due_at <= due_by).limit(limit)
        if after is not None:
            due_at, order_id = after
            query = query.where(
                or_(
                    DEADLINES_TABLE.c.due_at > due_at,
                    and_(DEADLINES_TABLE.c.due_at == due_at, DEADLINES_TABLE.c.order_id > order_id),
                )
            )
        page = session.execute(query).all()
        found.extend(r.order_id for r in page if covers is None or covers(r.user_id))
        if len(page) < limit:
            break
        after = (page[-1].due_at, page[-1].order_id)
    return found[:limit]


def expire_due(
    db: Database,
    *,
    deadline_s: float,
    due_by: datetime | None = None,
    covers: Callable[[int], bool] | None = None,
    batch_size: int = 500,
) -> int:
    """Fail the CREATED orders whose deadline passed by `due_by` (default: now), of the users
    `covers` accepts (default: all), one batch; return how many were failed.

    Locks are taken in the order the consumer takes them (the order row, then its
    deadline), and orders another transaction holds are skipped (`SKIP LOCKED`): a
    replica finishing an order right now wins, and two replicas never wait on each other.
    """
    now = utcnow()
    due_by = now if due_by is None else min(due_by, now)
    with db.read() as session:
        due = due_orders(session, due_by=due_by, covers=covers, limit=batch_size)
    if not due:
        return 0
    with db.write() as session:
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
    """The deadline worker: each round, fails the due orders whose outcome partition this
    replica has caught up with (see the module docstring).

    `caught_up` asks the replica's consumer (`watch` hands it the consumer once the
    service has built it); until then, nothing is failed.
    """

    def __init__(
        self,
        db: Database,
        *,
        deadline_s: float,
        caught_up: CaughtUpReader | None = None,
        batch_size: int = 500,
    ) -> None:
        self.db = db
        self.deadline_s = deadline_s
        self.caught_up = caught_up
        self.batch_size = batch_size

    def watch(self, consumer: EventConsumer) -> None:
        """Follow this consumer of `transactions` (the replica's own)."""
        self.caught_up = consumer.caught_up_partitions

    def __call__(self) -> int:
        state = self.caught_up(TRANSACTIONS.name) if self.caught_up else None
        if state is None or not state.partitions:
            return 0
        partitions: dict[int, int] = {}

        def covers(user_id: int) -> bool:
            if user_id not in partitions:
                partitions[user_id] = outcome_partition(user_id, state.partition_count)
            return partitions[user_id] in state.partitions

        return expire_due(
            self.db,
            deadline_s=self.deadline_s,
            due_by=state.as_of,
            covers=covers,
            batch_size=self.batch_size,
        )
