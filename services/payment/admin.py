"""The Payment service's admin API: the shared one (operations.admin) over its database, plus
its view of held money.

The Payment service cannot tell a FAILED order (it gives money back for every OrderFailed
it applies), so for held money it answers about the orders it is asked about: those of
them it charged and has not refunded. `paysaga orders held` asks it about the orders the
Order service sees held.
"""

from __future__ import annotations

import grpc
from sqlalchemy import select
from sqlmodel import col

from paysaga.admin.v1 import admin_pb2
from services.common.operations.admin import AdminServicer, held_scope, page_after
from services.common.persistence.db import Database
from services.common.serving.grpc_errors import abort
from services.common.serving.paging import keyset_page, oldest_first_after
from services.common.timeutil import to_timestamp
from services.payment.models import Payment
from services.payment.settings import PaymentSettings
from services.saga.topics import ORDERS, PAYMENTS, SAGA_TOPICS

_MAX_ORDER_IDS = 1000


class PaymentAdmin(AdminServicer):
    """paysaga.admin.v1.AdminService on the Payment service."""

    def ListHeldOrders(
        self, request: admin_pb2.ListHeldOrdersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListHeldOrdersResponse:
        if not request.order_ids:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "order_ids is required: the payment service cannot tell a FAILED order; "
                "ask the Order service for its held orders first (`paysaga orders held` does)",
            )
        if len(request.order_ids) > _MAX_ORDER_IDS:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {_MAX_ORDER_IDS} order_ids at once, got {len(request.order_ids)}",
            )
        limit = min(request.limit, 1000) if request.limit > 0 else 100
        scope = held_scope(0, request.order_ids)
        after = page_after(context, request.page_token, scope)
        with self.db.read() as session:
            found = session.execute(
                select(Payment)
                .where(col(Payment.order_id).in_(set(request.order_ids)))
                .where(col(Payment.approved).is_(True))
                .where(col(Payment.refunded_at).is_(None))
                .where(oldest_first_after(col(Payment.created_at), col(Payment.order_id), after))
                .order_by(col(Payment.created_at), col(Payment.order_id))
                .limit(limit + 1)
            ).scalars()
            payments, token = keyset_page(
                list(found), limit, scope, lambda p: (p.created_at, p.order_id)
            )
            held = [
                admin_pb2.HeldOrder(
                    order_id=p.order_id,
                    user_id=p.user_id,
                    amount_cents=p.amount_cents,
                    charge_time=to_timestamp(p.created_at),
                )
                for p in payments
            ]
        return admin_pb2.ListHeldOrdersResponse(orders=held, next_page_token=token)


def payment_admin(db: Database, settings: PaymentSettings) -> PaymentAdmin:
    """The Payment service's admin servicer over `db`: dead letters of `orders` and
    `payments`, its saga steps, its backlog, its charges not refunded."""
    return PaymentAdmin(
        service="payment",
        db=db,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        consumer_group=settings.consumer_group,
        topics=[ORDERS.name, PAYMENTS.name],
        topic_table=SAGA_TOPICS,
        inbox_retention_days=settings.inbox_retention,
        journal_retention_days=settings.journal_retention_days,
        redrive_max=settings.redrive_max,
    )
