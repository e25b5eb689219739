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

from paysaga.v1 import events_pb2, payments_pb2
from services.common import metrics
from services.common.cloudevents import EventMeta, InvalidEvent
from services.common.crashpoints import crash_point
from services.common.outbox import OutboxWriter
from services.common.timeutil import utcnow
from services.payment.domain import decide_payment
from services.payment.models import CHARGE, REFUND, Account, Payment, Transaction

log = logging.getLogger(__name__)

_ORDER_EVENTS = (events_pb2.OrderPurchased, events_pb2.OrderFailed)

_PAYMENT_OUTCOMES = {
    events_pb2.PAYMENT_STATUS_APPROVED: True,
    events_pb2.PAYMENT_STATUS_DECLINED: False,
}


def _transaction(id: str, order_id: str, kind: str, user_id: int, amount: int) -> dict[str, Any]:
    return {
        "id": id,
        "order_id": order_id,
        "kind": kind,
        "user_id": user_id,
        "amount_cents": amount,
        "created_at": utcnow(),
    }


def _check_common(order_id: str, user_id: int, amount_cents: int) -> None:
    if not order_id:
        raise InvalidEvent("order_id is empty")
    if user_id <= 0:
        raise InvalidEvent(f"user_id must be positive, got {user_id}")
    if amount_cents <= 0:
        raise InvalidEvent(f"amount_cents must be positive, got {amount_cents}")


class ChargeOrders:
    """Topic `orders`: charge each OrderPurchased; give the money back for each OrderFailed.

    OrderPurchased: debit the price if the balance covers it; announce APPROVED or
    DECLINED. An order is decided once: its Payment row (keyed by order id) says it was.
    OrderFailed: if money was taken for the order and not yet given back, credit it back,
    record a REFUND transaction and announce it; if the order was not decided yet, record
    a declined Payment so a late OrderPurchased never charges it. Both events of one order
    share a key, so one consumer sees them in order; the Payment row and the unique
    (order, kind) transaction make replays and duplicates harmless.
    """

    def __init__(self, session: Session, outbox: OutboxWriter, events: Sequence[Message]) -> None:
        self.session = session
        self.outbox = outbox
        order_ids = {e.order_id for e in events if isinstance(e, _ORDER_EVENTS)}
        self.payments: dict[str, Payment] = {
            p.order_id: p
            for p in session.exec(select(Payment).where(col(Payment.order_id).in_(order_ids)))
        }
        # Locked for the transaction where the database can (SELECT ... FOR UPDATE); on
        # SQLite the write transaction (BEGIN IMMEDIATE) already excludes other writers.
        accounts = session.exec(
            select(Account)
            .where(
                col(Account.user_id).in_(
                    {e.user_id for e in events if isinstance(e, _ORDER_EVENTS)}
                )
            )
            .with_for_update()
        )
        self.accounts = {a.user_id: a for a in accounts}
        self.new_payments: list[Payment] = []
        #: New CHARGE and REFUND transactions.
        self.charges: list[dict[str, Any]] = []
        #: Decisions on OrderPurchased events, counted once the transaction commits.
        self.decisions = {"approved": 0, "declined": 0}

    def apply(self, event: Message, meta: EventMeta) -> None:
        if isinstance(event, events_pb2.OrderFailed):
            self._refund(event, meta)
            return
        assert isinstance(event, events_pb2.OrderPurchased)
        _check_common(event.order_id, event.user_id, event.amount_cents)
        if event.product_id <= 0 or not event.HasField("create_time"):
            raise InvalidEvent("an OrderPurchased names its product and creation time")
        fields = {"order_id": event.order_id, "event_id": meta.id, "user_id": event.user_id}
        if event.order_id in self.payments:
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
            # The ledger row goes with the debit: balances = start - charges + refunds, always.
            self.charges.append(
                _transaction(
                    str(uuid.uuid4()), event.order_id, CHARGE, event.user_id, event.amount_cents
                )
            )
            crash_point("payment.after-debit")
        self._decide(
            event.order_id, event.user_id, event.amount_cents, decision.approved, decision.reason
        )
        self.decisions["approved" if decision.approved else "declined"] += 1
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

    def _decide(
        self, order_id: str, user_id: int, amount: int, approved: bool, reason: str
    ) -> None:
        payment = Payment(
            order_id=order_id,
            user_id=user_id,
            amount_cents=amount,
            approved=approved,
            reason=reason,
            created_at=utcnow(),
        )
        self.payments[order_id] = payment
        self.new_payments.append(payment)

    def _refund(self, event: events_pb2.OrderFailed, meta: EventMeta) -> None:
        _check_common(event.order_id, event.user_id, event.amount_cents)
        fields = {"order_id": event.order_id, "event_id": meta.id, "user_id": event.user_id}
        payment = self.payments.get(event.order_id)
        if payment is None:
            reason = f"order failed before its payment: {event.reason}"[:500]
            self._decide(event.order_id, event.user_id, event.amount_cents, False, reason)
            log.info("order failed before its payment; it will never be charged", extra=fields)
            return
        if not payment.approved or payment.refunded_at is not None:
            log.info("nothing to give back for this failed order", extra=fields)
            return
        if (payment.user_id, payment.amount_cents) != (event.user_id, event.amount_cents):
            raise InvalidEvent(
                f"OrderFailed for order {event.order_id} says user {event.user_id} / "
                f"{event.amount_cents} cents, its payment was user {payment.user_id} / "
                f"{payment.amount_cents} cents"
            )
        account = self.accounts[payment.user_id]
        now = utcnow()
        account.balance_cents += payment.amount_cents
        account.updated_at = now
        payment.refunded_at = now
        transaction_id = str(uuid.uuid4())
        self.charges.append(
            _transaction(
                transaction_id, event.order_id, REFUND, payment.user_id, payment.amount_cents
            )
        )
        outgoing = events_pb2.TransactionRecorded(
            order_id=event.order_id,
            user_id=payment.user_id,
            amount_cents=payment.amount_cents,
            status=events_pb2.TRANSACTION_STATUS_SUCCESSFUL,
            transaction_id=transaction_id,
            kind=payments_pb2.TRANSACTION_KIND_REFUND,
        )
        self.outbox.add_event(outgoing, key=payment.user_id, subject=event.order_id)
        log.warning(
            "money given back for a failed order",
            extra={**fields, "transaction_id": transaction_id},
        )

    def write(self) -> None:
        # Changed accounts and payments are flushed by the session at commit.
        self.session.add_all(self.new_payments)
        if self.charges:
            self.session.execute(insert(Transaction), self.charges)
        metrics.count_after_commit(self.session, metrics.PAYMENTS, self.decisions)


class RecordTransactions:
    """Topic `payments`: announce the CHARGE transaction of an approved payment, or that none
    was recorded. (The CHARGE row is written with the debit itself, in ChargeOrders, so the
    ledger always matches the balances; this hop only announces it.)"""

    def __init__(self, session: Session, outbox: OutboxWriter, events: Sequence[Message]) -> None:
        self.session = session
        self.outbox = outbox
        order_ids = {e.order_id for e in events if isinstance(e, events_pb2.PaymentProcessed)}
        self.decided = {
            p.order_id: p
            for p in session.exec(select(Payment).where(col(Payment.order_id).in_(order_ids)))
        }
        self.recorded: dict[str, str] = {
            order_id: transaction_id
            for order_id, transaction_id in session.exec(
                select(Transaction.order_id, Transaction.id)
                .where(col(Transaction.order_id).in_(order_ids))
                .where(Transaction.kind == CHARGE)
            )
        }
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
            transaction_id = self.recorded.get(event.order_id)
            if transaction_id is None:  # a debit made before charges were recorded with it
                transaction_id = str(uuid.uuid4())
                self.recorded[event.order_id] = transaction_id
                self.transactions.append(
                    _transaction(
                        transaction_id, event.order_id, CHARGE, event.user_id, event.amount_cents
                    )
                )
            outgoing.kind = payments_pb2.TRANSACTION_KIND_CHARGE
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
