"""The events an order change announces, staged in the outbox of the change's transaction.

Every committed change of an order is published on `order-updates` (OrderUpdated: what
WatchOrders streams on every replica show), and an order that ends FAILED also announces
OrderFailed on `orders`, so the Payment service gives back any money it took for it.
"""

from __future__ import annotations

from collections.abc import Sequence

from paysaga.v1 import events_pb2, orders_pb2
from services.common.messaging.outbox import OutboxWriter
from services.common.timeutil import to_timestamp
from services.order.domain import Status
from services.order.models import OrderRow

_STATUS_TO_PROTO = {
    Status.CREATED: orders_pb2.ORDER_STATUS_CREATED,
    Status.COMPLETED: orders_pb2.ORDER_STATUS_COMPLETED,
    Status.FAILED: orders_pb2.ORDER_STATUS_FAILED,
}
STATUS_FROM_PROTO = {v: k for k, v in _STATUS_TO_PROTO.items()}


def order_to_proto(order: OrderRow) -> orders_pb2.Order:
    return orders_pb2.Order(
        id=order["id"],
        user_id=order["user_id"],
        product_id=order["product_id"],
        price_cents=order["price_cents"],
        status=_STATUS_TO_PROTO[Status(order["status"])],
        failure_reason=order["failure_reason"],
        create_time=to_timestamp(order["created_at"]),
        update_time=to_timestamp(order["updated_at"]),
        request_id=order["request_id"] or "",
        version=order["version"],
    )


def announce(
    outbox: OutboxWriter,
    order: OrderRow,
    *,
    failed_now: bool = False,
    trace: Sequence[tuple[str, bytes]] | None = None,
) -> None:
    """Stage OrderUpdated for a changed order, and OrderFailed if it has just FAILED
    (with the trace context `trace`, by default the current one)."""
    outbox.add_event(
        events_pb2.OrderUpdated(order=order_to_proto(order)),
        key=order["user_id"],
        subject=order["id"],
        trace=trace,
    )
    if failed_now:
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
            trace=trace,
        )
