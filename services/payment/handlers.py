"""Payment service event handlers: charge on `orders`, record a transaction on `payments`.

Each handler is a batch (see services.common.consumer.EventBatch): it loads what the
batch's events need with one query per table, applies the events in order in memory,
and writes the changes at the end: UPDATEs of the touched balances, bulk INSERTs of the
new rows.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message
from sqlalchemy import insert
from sqlmodel import Session, col, select

from paysaga.v1 import events_pb2
from services.common.cloudevents import EventMeta, InvalidEvent
from services.common.outbox import OutboxWriter
from services.common.timeutil import utcnow
from services.payment.domain import decide_payment
from services.payment.models import Account, Payment, Transaction

log = logging.getLogger(__name__)

_PAYMENT_OUTCOMES = {
    events_pb2.PAYMENT_STATUS_APPROVED: True,
    events_pb2.PAYMENT_STATUS_DECLINED: False,
}


def _check_common(order_id: str, user_id: int, amount_cents: int) -> None:
    if not order_id:
        raise InvalidEvent("order_id is empty")
    if user_id <= 0:
        raise InvalidEvent(f"user_id must be positive, got {user_id}")
    if amount_cents <= 0:
        raise InvalidEvent(f"amount_cents must be positive, got {amount_cents}")


class ChargeOrders:
    """Topic `orders`: debit the price if the balance covers it; announce APPROVED or DECLINED.

    An order is decided once: its Payment row (keyed by order id) says it was.
    """

    def __init__(self, session: Session, outbox: OutboxWriter, events: Sequence[Message]) -> None:
        self.session = session
        self.outbox = outbox
        orders = [e for e in events if isinstance(e, events_pb2.OrderPurchased)]
        order_ids = {e.order_id for e in orders}
        self.decided = set(
            session.exec(select(Payment.order_id).where(col(Payment.order_id).in_(order_ids)))
        )
        # Locked for the transaction where the database can (SELECT ... FOR UPDATE); on
        # SQLite the write transaction (BEGIN IMMEDIATE) already excludes other writers.
        accounts = session.exec(
            select(Account)
            .where(col(Account.user_id).in_({e.user_id for e in orders}))
            .with_for_update()
        )
        self.accounts = {a.user_id: a for a in accounts}
        self.payments: list[dict[str, Any]] = []

    def apply(self, event: Message, meta: EventMeta) -> None:
        assert isinstance(event, events_pb2.OrderPurchased)
        _check_common(event.order_id, event.user_id, event.amount_cents)
        if event.product_id <= 0 or not event.HasField("create_time"):
            raise InvalidEvent("an OrderPurchased names its product and creation time")
        fields = {"order_id": event.order_id, "event_id": meta.id, "user_id": event.user_id}
        if event.order_id in self.decided:
            log.info("order already charged or declined; event ignored", extra=fields)
            return
        account = self.accounts.get(event.user_id)
        decision = decide_payment(
            user_id=event.user_id,
            balance_cents=account.balance_cents if account else None,
            amount_cents=event.amount_cents,
        )
        if decision.approved and account is not None:
            account.balance_cents -= event.amount_cents
            account.updated_at = utcnow()
        self.decided.add(event.order_id)
        self.payments.append(
            {
                "order_id": event.order_id,
                "user_id": event.user_id,
                "amount_cents": event.amount_cents,
                "approved": decision.approved,
                "reason": decision.reason,
                "created_at": utcnow(),
            }
        )
        status = (
            events_pb2.PAYMENT_STATUS_APPROVED
            if decision.approved
            else events_pb2.PAYMENT_STATUS_DECLINED
        )
        outgoing = events_pb2.PaymentProcessed(
            order_id=event.order_id,
            user_id=event.user_id,
            amount_cents=event.amount_cents,
            status=status,
            reason=decision.reason,
        )
        self.outbox.add_event(outgoing, key=event.user_id, subject=event.order_id)
        log.debug(
            "payment decided",
            extra={**fields, "approved": decision.approved, "reason": decision.reason},
        )

    def write(self) -> None:
        # The debited accounts are flushed by the session at commit (one UPDATE each).
        if self.payments:
            self.session.execute(insert(Payment), self.payments)


class RecordTransactions:
    """Topic `payments`: record a Transaction for an approved payment; announce whether one was."""

    def __init__(self, session: Session, outbox: OutboxWriter, events: Sequence[Message]) -> None:
        self.session = session
        self.outbox = outbox
        order_ids = {e.order_id for e in events if isinstance(e, events_pb2.PaymentProcessed)}
        self.decided = {
            p.order_id: p
            for p in session.exec(select(Payment).where(col(Payment.order_id).in_(order_ids)))
        }
        self.recorded = set(
            session.exec(
                select(Transaction.order_id).where(col(Transaction.order_id).in_(order_ids))
            )
        )
        self.transactions: list[dict[str, Any]] = []

    def apply(self, event: Message, meta: EventMeta) -> None:
        assert isinstance(event, events_pb2.PaymentProcessed)
        _check_common(event.order_id, event.user_id, event.amount_cents)
        if event.status not in _PAYMENT_OUTCOMES:
            raise InvalidEvent(f"payment status {event.status} is neither APPROVED nor DECLINED")
        approved = _PAYMENT_OUTCOMES[event.status]
        payment = self.decided.get(event.order_id)
        if payment is None:
            raise InvalidEvent(f"no payment was decided for order {event.order_id}")
        if (approved, event.amount_cents, event.user_id) != (
            payment.approved,
            payment.amount_cents,
            payment.user_id,
        ):
            raise InvalidEvent(
                f"event does not match the payment decided for order {event.order_id}"
            )
        fields = {"order_id": event.order_id, "event_id": meta.id}
        outgoing = events_pb2.TransactionRecorded(
            order_id=event.order_id, user_id=event.user_id, amount_cents=event.amount_cents
        )
        if approved:
            if event.order_id in self.recorded:
                log.info("transaction already recorded; event ignored", extra=fields)
                return
            transaction_id = str(uuid.uuid4())
            self.recorded.add(event.order_id)
            self.transactions.append(
                {
                    "id": transaction_id,
                    "order_id": event.order_id,
                    "user_id": event.user_id,
                    "amount_cents": event.amount_cents,
                    "created_at": utcnow(),
                }
            )
            outgoing.status = events_pb2.TRANSACTION_STATUS_SUCCESSFUL
            outgoing.transaction_id = transaction_id
        else:
            outgoing.status = events_pb2.TRANSACTION_STATUS_UNSUCCESSFUL
            outgoing.reason = event.reason or "payment declined"
        self.outbox.add_event(outgoing, key=event.user_id, subject=event.order_id)
        log.debug("transaction outcome", extra={**fields, "recorded": approved})

    def write(self) -> None:
        if self.transactions:
            self.session.execute(insert(Transaction), self.transactions)
