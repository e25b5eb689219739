"""Order service event handlers: TransactionRecorded ends an order's saga (topic `transactions`).

A CHARGE outcome ends a CREATED order: COMPLETED when the transaction was recorded, FAILED
otherwise. A REFUND says the money taken for a FAILED order was given back: the order
stays FAILED and its reason names the refund. Every change is announced through the
outbox (services.order.changes) and ends the order's saga deadline.

The order also records the money it has seen (`charged_at`, `refunded_at`), in the same
UPDATE, even when a charge arrives for an order that had FAILED already: a FAILED order
charged and not refunded is money held, which services.order.refunds heals.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from google.protobuf.message import Message
from sqlalchemy import bindparam, delete, select, update

from paysaga.v1 import events_pb2, payments_pb2
from services.common.messaging.cloudevents import EventMeta, InvalidEvent
from services.common.messaging.outbox import OutboxWriter
from services.common.money import format_cents
from services.common.persistence.prepared import Prepared
from services.common.persistence.transaction import Transaction
from services.common.timeutil import utcnow
from services.order import metrics
from services.order.changes import announce
from services.order.domain import Status, next_status, refund_note
from services.order.models import DEADLINES_TABLE, ORDERS_TABLE, OrderRow

log = logging.getLogger(__name__)

_OUTCOMES = {
    events_pb2.TRANSACTION_STATUS_SUCCESSFUL: True,
    events_pb2.TRANSACTION_STATUS_UNSUCCESSFUL: False,
}


# Built once: these run for every consumed batch.
_UPDATE_ORDER = Prepared(
    update(ORDERS_TABLE)
    .where(ORDERS_TABLE.c.id == bindparam("order_id"))
    .values(
        status=bindparam("status"),
        failure_reason=bindparam("failure_reason"),
        updated_at=bindparam("updated_at"),
        version=bindparam("version"),
        charged_at=bindparam("charged_at"),
        refunded_at=bindparam("refunded_at"),
    )
)
# Only for an order whose money changed and nothing else (a charge after it FAILED, a
# refund noted before these columns existed): no new version, nothing to announce.
_NOTE_MONEY = Prepared(
    update(ORDERS_TABLE)
    .where(ORDERS_TABLE.c.id == bindparam("order_id"))
    .values(charged_at=bindparam("charged_at"), refunded_at=bindparam("refunded_at"))
)
_END_DEADLINES = Prepared(
    delete(DEADLINES_TABLE).where(
        DEADLINES_TABLE.c.order_id.in_(bindparam("order_ids", expanding=True))
    ),
    expanding=["order_ids"],
)
_LOCK_ORDERS = Prepared(
    select(ORDERS_TABLE)
    .where(ORDERS_TABLE.c.id.in_(bindparam("order_ids", expanding=True)))
    .order_by(ORDERS_TABLE.c.id)  # locked in one order by every replica
    .with_for_update(),
    expanding=["order_ids"],
)


def write_order_changes(
    session: Transaction, outbox: OutboxWriter, changed: Sequence[OrderRow], failed_now: set[str]
) -> None:
    """UPDATE the changed orders (one version more each), end the deadlines of terminal ones,
    announce each change."""
    if not changed:
        return
    for order in changed:
        order["version"] += 1
    _UPDATE_ORDER.execute_many(session, [{**order, "order_id": order["id"]} for order in changed])
    ended = [o["id"] for o in changed if Status(o["status"]).terminal]
    if ended:
        _END_DEADLINES.execute(session, {"order_ids": ended})
    for order in changed:
        announce(outbox, order, failed_now=order["id"] in failed_now)
    metrics.sagas_ended_after_commit(
        session,
        (
            (
                "completed" if order["status"] == Status.COMPLETED.value else "failed",
                order["created_at"],
            )
            for order in changed
            if order["status"] == Status.COMPLETED.value or order["id"] in failed_now
        ),
    )


class FinishOrders:
    """Topic `transactions`: end each order from its TransactionRecorded; terminal orders stay."""

    def __init__(
        self, session: Transaction, outbox: OutboxWriter, events: Sequence[Message]
    ) -> None:
        self.session = session
        self.outbox = outbox
        order_ids = {e.order_id for e in events if isinstance(e, events_pb2.TransactionRecorded)}
        # Locked (PostgreSQL): a deadline expiring on another replica waits, then sees the end.
        found = _LOCK_ORDERS.mappings(session, {"order_ids": list(order_ids)})
        self.orders: dict[str, OrderRow] = {row["id"]: row for row in found}
        self.changed: dict[str, OrderRow] = {}
        self.failed_now: set[str] = set()
        #: Orders whose charge or refund was first seen in this batch.
        self.money_seen: dict[str, OrderRow] = {}

    def apply(self, event: Message, meta: EventMeta) -> None:
        assert isinstance(event, events_pb2.TransactionRecorded)
        if event.status not in _OUTCOMES:
            raise InvalidEvent(
                f"transaction status {event.status} is neither SUCCESSFUL nor UNSUCCESSFUL"
            )
        order = self.orders.get(event.order_id)
        if order is None:
            if event.status == events_pb2.TRANSACTION_STATUS_SUCCESSFUL:
                log.error(
                    "a transaction was recorded for an order that does not exist",
                    extra={
                        "order_id": event.order_id,
                        "event_id": meta.id,
                        "transaction_id": event.transaction_id,
                    },
                )
            raise InvalidEvent(f"unknown order {event.order_id!r}")
        if (event.user_id, event.amount_cents) != (order["user_id"], order["price_cents"]):
            raise InvalidEvent(
                f"event for order {order['id']} says user {event.user_id} / "
                f"{event.amount_cents} cents, the order has user {order['user_id']} / "
                f"{order['price_cents']} cents"
            )
        if event.kind == payments_pb2.TRANSACTION_KIND_REFUND:
            self._refunded(order, event, meta)
        else:
            self._finish(order, event, meta)

    def _finish(
        self, order: OrderRow, event: events_pb2.TransactionRecorded, meta: EventMeta
    ) -> None:
        fields = {"order_id": order["id"], "event_id": meta.id}
        charged = _OUTCOMES[event.status]
        now = utcnow()
        if charged and order["charged_at"] is None:
            order["charged_at"] = now
            self.money_seen[order["id"]] = order
        change = next_status(Status(order["status"]), charged, event.reason)
        if change is None:
            if charged and order["status"] == Status.FAILED.value:
                log.warning("a FAILED order was charged; its refund is due", extra=fields)
            else:
                log.info("order already terminal; event ignored", extra=fields)
            return
        status, reason = change
        order.update(status=status.value, failure_reason=reason, updated_at=now)
        self.changed[order["id"]] = order
        if status is Status.FAILED:
            self.failed_now.add(order["id"])
        log.debug("order finished", extra={**fields, "status": status, "reason": reason})

    def _refunded(
        self, order: OrderRow, event: events_pb2.TransactionRecorded, meta: EventMeta
    ) -> None:
        fields = {"order_id": order["id"], "event_id": meta.id}
        if order["status"] != Status.FAILED.value:
            # The Payment service refunds only orders announced FAILED, and a FAILED order
            # never changes again: this cannot happen unless the data was altered.
            log.critical("refund recorded for an order that is not FAILED", extra=fields)
            raise InvalidEvent(f"refund for order {order['id']} which is {order['status']}")
        now = utcnow()
        if order["refunded_at"] is None:
            order["refunded_at"] = now
            self.money_seen[order["id"]] = order
        note = refund_note(
            order["failure_reason"], format_cents(event.amount_cents), event.transaction_id
        )
        if order["failure_reason"] == note or "; refunded " in order["failure_reason"]:
            log.info("refund already noted; event ignored", extra=fields)
            return
        order.update(failure_reason=note, updated_at=now)
        self.changed[order["id"]] = order
        log.info("order refunded", extra={**fields, "transaction_id": event.transaction_id})

    def write(self) -> None:
        write_order_changes(self.session, self.outbox, list(self.changed.values()), self.failed_now)
        money_only = [o for i, o in self.money_seen.items() if i not in self.changed]
        if money_only:
            _NOTE_MONEY.execute_many(
                self.session,
                [
                    {
                        "order_id": o["id"],
                        "charged_at": o["charged_at"],
                        "refunded_at": o["refunded_at"],
                    }
                    for o in money_only
                ],
            )
