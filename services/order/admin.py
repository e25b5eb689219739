"""The Order service's admin API: the shared one plus its orders (timeline head, stuck sagas,
held money).

A stuck order is one still CREATED past the threshold. What it waits for is read from
this service's own records, so it answers even while the Payment service is down: its
OrderPurchased still in the outbox (unpublished or parked: the relay or Kafka), or
published and no outcome applied yet (the Payment service's decision).

A held order is one FAILED whose charge this service has seen and whose refund it has not
(services.order.refunds announces its OrderFailed again); GetStatus counts them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import grpc
from sqlalchemy import func, select
from sqlmodel import Session, col

from paysaga.admin.v1 import admin_pb2
from paysaga.v1 import events_pb2
from services.common.messaging.journal import SagaStep, StepKind
from services.common.messaging.outbox import OutboxRecord, ParkedRecord
from services.common.operations.admin import AdminServicer, held_scope, page_after
from services.common.persistence.db import Database
from services.common.serving.grpc_errors import abort
from services.common.serving.paging import keyset_page, oldest_first_after
from services.common.timeutil import to_timestamp, utcnow
from services.order.domain import Status
from services.order.models import ORDERS_TABLE, SagaDeadline
from services.order.refunds import HELD
from services.order.settings import OrderSettings
from services.saga.topics import SAGA_TOPICS, TRANSACTIONS

_PURCHASED = events_pb2.OrderPurchased.DESCRIPTOR.full_name
_DEFAULT_OLDER_THAN_S = 30.0
_MAX_ORDER_IDS = 1000


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _ago(moment: datetime, now: datetime) -> str:
    seconds = int((now - _aware(moment)).total_seconds())
    return f"{seconds // 60:02d}:{seconds % 60:02d} ago"


class OrderAdmin(AdminServicer):
    """paysaga.admin.v1.AdminService on the Order service."""

    def describe_order(
        self, session: Session, order_id: str, response: admin_pb2.GetOrderTimelineResponse
    ) -> None:
        """The order's status, and its creation (the CreateOrder call) as the first step."""
        order = (
            session.execute(select(ORDERS_TABLE).where(ORDERS_TABLE.c.id == order_id))
            .mappings()
            .first()
        )
        if order is None:
            return
        response.status = order["status"]
        response.failure_reason = order["failure_reason"]
        created = admin_pb2.Step(
            time=to_timestamp(order["created_at"]),
            kind=admin_pb2.STEP_KIND_ORDER_CREATED,
            service=self.service,
            partition=-1,
            offset=-1,
            detail=f"CreateOrder: user {order['user_id']}, product {order['product_id']}, "
            f"{order['price_cents']} cents, request_id {order['request_id']}",
        )
        response.steps.insert(0, created)

    def ListStuckOrders(
        self, request: admin_pb2.ListStuckOrdersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListStuckOrdersResponse:
        if request.older_than_seconds < 0:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "older_than_seconds must be 0 (the default, 30 s) or more",
            )
        older_than = request.older_than_seconds or _DEFAULT_OLDER_THAN_S
        limit = min(request.limit, 1000) if request.limit > 0 else 100
        scope = f"stuck:{older_than:g}"
        after = page_after(context, request.page_token, scope)
        now = utcnow()
        created, order_id = ORDERS_TABLE.c.created_at, ORDERS_TABLE.c.id
        with self.db.read() as session:
            found = (
                session.execute(
                    select(ORDERS_TABLE, col(SagaDeadline.due_at))
                    .outerjoin(SagaDeadline, col(SagaDeadline.order_id) == order_id)
                    .where(ORDERS_TABLE.c.status == Status.CREATED.value)
                    .where(created < now - timedelta(seconds=older_than))
                    .where(oldest_first_after(created, order_id, after))
                    .order_by(created, order_id)
                    .limit(limit + 1)
                )
                .mappings()
                .all()
            )
            orders, token = keyset_page(found, limit, scope, lambda o: (o["created_at"], o["id"]))
            waits = _waiting_for(session, [o["id"] for o in orders], now)
        stuck = []
        for order in orders:
            item = admin_pb2.StuckOrder(
                order_id=order["id"],
                user_id=order["user_id"],
                create_time=to_timestamp(order["created_at"]),
                waiting_for=waits.get(order["id"], "payment decision (no step recorded)"),
            )
            if order["due_at"] is not None:
                item.deadline_time.CopyFrom(to_timestamp(order["due_at"]))
            stuck.append(item)
        return admin_pb2.ListStuckOrdersResponse(orders=stuck, next_page_token=token)

    def ListHeldOrders(
        self, request: admin_pb2.ListHeldOrdersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListHeldOrdersResponse:
        if request.older_than_seconds < 0:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "older_than_seconds must be 0 (the default, 30 s) or more",
            )
        if len(request.order_ids) > _MAX_ORDER_IDS:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"at most {_MAX_ORDER_IDS} order_ids at once, got {len(request.order_ids)}",
            )
        older_than = request.older_than_seconds or _DEFAULT_OLDER_THAN_S
        limit = min(request.limit, 1000) if request.limit > 0 else 100
        scope = held_scope(older_than, request.order_ids)
        after = page_after(context, request.page_token, scope)
        charged, order_id = ORDERS_TABLE.c.charged_at, ORDERS_TABLE.c.id
        query = (
            select(ORDERS_TABLE)
            .where(HELD)
            .where(charged < utcnow() - timedelta(seconds=older_than))
            .where(oldest_first_after(charged, order_id, after))
        )
        if request.order_ids:
            query = query.where(order_id.in_(set(request.order_ids)))
        with self.db.read() as session:
            found = (
                session.execute(query.order_by(charged, order_id).limit(limit + 1)).mappings().all()
            )
        orders, token = keyset_page(found, limit, scope, lambda o: (o["charged_at"], o["id"]))
        held = []
        for order in orders:
            item = admin_pb2.HeldOrder(
                order_id=order["id"],
                user_id=order["user_id"],
                amount_cents=order["price_cents"],
                charge_time=to_timestamp(order["charged_at"]),
                failure_reason=order["failure_reason"],
            )
            if order["refund_reannounced_at"] is not None:
                item.reannounce_time.CopyFrom(to_timestamp(order["refund_reannounced_at"]))
            held.append(item)
        return admin_pb2.ListHeldOrdersResponse(orders=held, next_page_token=token)

    def status(self) -> admin_pb2.GetStatusResponse:
        """The shared status, with the orders whose money is held (any age)."""
        response = super().status()
        with self.db.read() as session:
            response.held_orders = session.execute(
                select(func.count()).select_from(ORDERS_TABLE).where(HELD)
            ).scalar_one()
        return response


def _waiting_for(session: Session, order_ids: list[str], now: datetime) -> dict[str, str]:
    """order id -> the step it waits for, in words (one query per table for all orders)."""
    if not order_ids:
        return {}
    purchased = {
        row.order_id: row
        for row in session.execute(
            select(SagaStep)
            .where(col(SagaStep.order_id).in_(order_ids))
            .where(col(SagaStep.kind) == StepKind.PRODUCED.value)
            .where(col(SagaStep.event_type) == _PURCHASED)
        ).scalars()
    }
    event_ids = [step.event_id for step in purchased.values()]
    unpublished = {
        event_id: (attempts, error)
        for event_id, attempts, error in session.execute(
            select(
                col(OutboxRecord.event_id), col(OutboxRecord.attempts), col(OutboxRecord.last_error)
            ).where(col(OutboxRecord.event_id).in_(event_ids))
        ).all()
    }
    parked = {
        event_id: error
        for event_id, error in session.execute(
            select(col(ParkedRecord.event_id), col(ParkedRecord.error)).where(
                col(ParkedRecord.event_id).in_(event_ids)
            )
        ).all()
    }
    waits = {}
    for order_id, step in purchased.items():
        when = _ago(step.recorded_at, now)
        if step.event_id in parked:
            waits[order_id] = f"an operator: OrderPurchased parked ({parked[step.event_id]})"
        elif step.event_id in unpublished:
            attempts, error = unpublished[step.event_id]
            tried = f", {attempts} failed attempt(s): {error}" if attempts else ""
            waits[order_id] = f"Kafka: OrderPurchased written {when}, not yet published{tried}"
        else:
            waits[order_id] = f"payment decision: OrderPurchased published {when}"
    return waits


def order_admin(db: Database, settings: OrderSettings) -> OrderAdmin:
    """The Order service's admin servicer over `db` (see services.common.operations.admin)."""
    return OrderAdmin(
        service="order",
        db=db,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        consumer_group=settings.consumer_group,
        topics=[TRANSACTIONS.name],
        topic_table=SAGA_TOPICS,
        inbox_retention_days=settings.inbox_retention,
        journal_retention_days=settings.journal_retention_days,
        redrive_max=settings.redrive_max,
    )
