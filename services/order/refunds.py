"""Held money heals by itself: OrderFailed is announced again for an order whose money is held.

Money is held when an order FAILED, the Order service has seen its charge applied
(`charged_at`) and not its refund (`refunded_at`): the OrderFailed that asks the Payment
service for the refund was lost on the way (parked in the outbox, dead-lettered, deleted),
or was never sent because the charge came after the order failed. Once an order has been
held longer than `after_s`, this worker stages a new OrderFailed for it (a new event id)
through the outbox, like every other event, and notes when (`refund_reannounced_at`): at
most once per `after_s` per order, however many replicas run it (`FOR UPDATE SKIP
LOCKED`). The Payment service gives money back only for a payment not refunded yet, so
however many announcements reach it, the refund is applied once; its TransactionRecorded
sets `refunded_at` here and the order is no longer held.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import or_, select, text, update

from paysaga.v1 import events_pb2
from services.common.messaging.outbox import OutboxWriter
from services.common.persistence.db import Database
from services.common.timeutil import to_timestamp, utcnow
from services.order.models import HELD_MONEY, ORDERS_TABLE
from services.saga.topics import SAGA_TOPICS

log = logging.getLogger(__name__)

#: Orders with money held: the predicate of the partial index ix_orders_held, written out
#: (not bound) so that PostgreSQL can prove it and use that index.
HELD = text(HELD_MONEY)


def reannounce_held(db: Database, *, after_s: float, batch_size: int = 100) -> int:
    """Announce OrderFailed again for orders held longer than `after_s` and not announced
    again within `after_s` (one batch); return how many."""
    now = utcnow()
    cutoff = now - timedelta(seconds=after_s)
    with db.write() as session:
        held = (
            session.execute(
                select(ORDERS_TABLE)
                .where(HELD)
                .where(ORDERS_TABLE.c.charged_at <= cutoff)
                .where(
                    or_(
                        ORDERS_TABLE.c.refund_reannounced_at.is_(None),
                        ORDERS_TABLE.c.refund_reannounced_at <= cutoff,
                    )
                )
                .order_by(ORDERS_TABLE.c.charged_at)
                .limit(batch_size)
                .with_for_update(skip_locked=True)  # another replica's, or a refund applied now
            )
            .mappings()
            .all()
        )
        if not held:
            return 0
        session.execute(
            update(ORDERS_TABLE)
            .where(ORDERS_TABLE.c.id.in_([order["id"] for order in held]))
            .values(refund_reannounced_at=now)
        )
        outbox = OutboxWriter(SAGA_TOPICS)
        for order in held:
            outbox.add_event(
                events_pb2.OrderFailed(
                    order_id=order["id"],
                    user_id=order["user_id"],
                    amount_cents=order["price_cents"],
                    reason=order["failure_reason"],
                    fail_time=to_timestamp(order["updated_at"]),
                ),
                key=order["user_id"],
                subject=order["id"],
            )
            log.warning(
                "money held for a FAILED order: OrderFailed announced again",
                extra={
                    "order_id": order["id"],
                    "charged_at": order["charged_at"].isoformat(),
                    "reannounced_before": bool(order["refund_reannounced_at"]),
                },
            )
        outbox.write(session)
    return len(held)


class HeldMoney:
    """The re-announcement worker's step (for a PeriodicWorker): one batch per call."""

    def __init__(self, db: Database, *, after_s: float) -> None:
        self.db = db
        self.after_s = after_s

    def __call__(self) -> int:
        return reannounce_held(self.db, after_s=self.after_s)
