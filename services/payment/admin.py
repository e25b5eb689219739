"""The Payment service's admin API: the shared one (operations.admin) over its database."""

from __future__ import annotations

from services.common.operations.admin import AdminServicer
from services.common.persistence.db import Database
from services.payment.settings import PaymentSettings
from services.saga.topics import ORDERS, PAYMENTS, SAGA_TOPICS


def payment_admin(db: Database, settings: PaymentSettings) -> AdminServicer:
    """The Payment service's admin servicer over `db`: dead letters of `orders` and
    `payments`, its saga steps, its backlog."""
    return AdminServicer(
        service="payment",
        db=db,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        consumer_group=settings.consumer_group,
        topics=[ORDERS.name, PAYMENTS.name],
        topic_table=SAGA_TOPICS,
        inbox_retention_days=settings.inbox_retention,
        journal_retention_days=settings.journal_retention_days,
    )
