"""Handlers of the events the Order service consumes: TransactionRecorded ends an order's saga."""

from __future__ import annotations

import logging
from collections.abc import Callable

from google.protobuf.message import Message
from sqlmodel import Session

from paysaga.v1 import events_pb2
from services.common.cloudevents import EventMeta, InvalidEvent
from services.common.consumer import Handler
from services.common.db import run_after_commit
from services.common.timeutil import utcnow
from services.order.domain import Status, next_status
from services.order.models import Order

log = logging.getLogger(__name__)

_OUTCOMES = {
    events_pb2.TRANSACTION_STATUS_SUCCESSFUL: True,
    events_pb2.TRANSACTION_STATUS_UNSUCCESSFUL: False,
}


def transaction_recorded_handler(on_change: Callable[[Order], None]) -> Handler:
    """The handler for topic `transactions`; `on_change` hears of each order it changes."""

    def on_transaction_recorded(session: Session, event: Message, meta: EventMeta) -> None:
        assert isinstance(event, events_pb2.TransactionRecorded)
        if event.status not in _OUTCOMES:
            raise InvalidEvent(
                f"transaction status {event.status} is neither SUCCESSFUL nor UNSUCCESSFUL"
            )
        order = session.get(Order, event.order_id) if event.order_id else None
        if order is None:
            raise InvalidEvent(f"unknown order {event.order_id!r}")
        if (event.user_id, event.amount_cents) != (order.user_id, order.price_cents):
            raise InvalidEvent(
                f"event for order {order.id} says user {event.user_id} / {event.amount_cents} "
                f"cents, the order has user {order.user_id} / {order.price_cents} cents"
            )
        fields = {"order_id": order.id, "event_id": meta.id}
        change = next_status(Status(order.status), _OUTCOMES[event.status], event.reason)
        if change is None:
            log.info(
                "order already terminal; event ignored", extra={**fields, "status": order.status}
            )
            return
        order.status, order.failure_reason = change
        order.updated_at = utcnow()
        session.add(order)
        run_after_commit(session, lambda: on_change(order))
        log.info(
            "order finished",
            extra={**fields, "status": order.status, "reason": order.failure_reason},
        )

    return on_transaction_recorded
