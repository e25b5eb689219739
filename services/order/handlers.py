"""Order service event handlers: TransactionRecorded ends an order's saga (topic `transactions`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

from google.protobuf.message import Message
from sqlalchemy import bindparam, select, update
from sqlmodel import Session

from paysaga.v1 import events_pb2
from services.common.cloudevents import EventMeta, InvalidEvent
from services.common.consumer import EventBatch, Handler
from services.common.db import run_after_commit
from services.common.outbox import OutboxWriter
from services.common.timeutil import utcnow
from services.order.domain import Status, next_status
from services.order.models import ORDERS_TABLE, OrderRow

log = logging.getLogger(__name__)

_OUTCOMES = {
    events_pb2.TRANSACTION_STATUS_SUCCESSFUL: True,
    events_pb2.TRANSACTION_STATUS_UNSUCCESSFUL: False,
}


class FinishOrders:
    """Sets each order COMPLETED or FAILED from its TransactionRecorded; terminal orders stay."""

    def __init__(
        self,
        session: Session,
        events: Sequence[Message],
        on_change: Callable[[Sequence[OrderRow]], None],
    ) -> None:
        self.session = session
        self.on_change = on_change
        order_ids = {e.order_id for e in events if isinstance(e, events_pb2.TransactionRecorded)}
        found = session.execute(select(ORDERS_TABLE).where(ORDERS_TABLE.c.id.in_(order_ids)))
        self.orders: dict[str, OrderRow] = {row["id"]: dict(row) for row in found.mappings()}
        self.changed: dict[str, OrderRow] = {}

    def apply(self, event: Message, meta: EventMeta) -> None:
        assert isinstance(event, events_pb2.TransactionRecorded)
        if event.status not in _OUTCOMES:
            raise InvalidEvent(
                f"transaction status {event.status} is neither SUCCESSFUL nor UNSUCCESSFUL"
            )
        order = self.orders.get(event.order_id)
        if order is None:
            if event.status == events_pb2.TRANSACTION_STATUS_SUCCESSFUL:
                log.error("money was taken for an order that does not exist",
                          extra={"order_id": event.order_id, "event_id": meta.id,
                                 "transaction_id": event.transaction_id})  # fmt: skip
            raise InvalidEvent(f"unknown order {event.order_id!r}")
        if (event.user_id, event.amount_cents) != (order["user_id"], order["price_cents"]):
            raise InvalidEvent(
                f"event for order {order['id']} says user {event.user_id} / "
                f"{event.amount_cents} cents, the order has user {order['user_id']} / "
                f"{order['price_cents']} cents"
            )
        fields = {"order_id": order["id"], "event_id": meta.id}
        change = next_status(Status(order["status"]), _OUTCOMES[event.status], event.reason)
        if change is None:
            log.info("order already terminal; event ignored", extra=fields)
            return
        status, reason = change
        order.update(status=status.value, failure_reason=reason, updated_at=utcnow())
        self.changed[order["id"]] = order
        log.debug("order finished", extra={**fields, "status": status, "reason": reason})

    def write(self) -> None:
        changed = list(self.changed.values())
        if not changed:
            return
        self.session.execute(
            update(ORDERS_TABLE)
            .where(ORDERS_TABLE.c.id == bindparam("order_id"))
            .values(
                status=bindparam("status"),
                failure_reason=bindparam("failure_reason"),
                updated_at=bindparam("updated_at"),
            ),
            [{**order, "order_id": order["id"]} for order in changed],
        )
        run_after_commit(self.session, lambda: self.on_change(changed))


def finish_orders_handler(on_change: Callable[[Sequence[OrderRow]], None]) -> Handler:
    """The handler for topic `transactions`; `on_change` hears of the orders it ends."""

    def open_batch(
        session: Session, _outbox: OutboxWriter, events: Sequence[Message]
    ) -> EventBatch:
        return FinishOrders(session, events, on_change)

    return open_batch
