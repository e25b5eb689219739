"""Payment service event handlers: charge on `orders`, record a transaction on `payments`.

Each handler is a batch (see services.common.messaging.apply.EventBatch): it loads what the
batch's events need with one query per table, applies the events in order in memory,
and writes the changes at the end: UPDATEs of the touched balances and refunded
payments, bulk INSERTs of the new rows. Rows are plain dicts; the statements are Core, built
once (services.payment.statements).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from google.protobuf.message import Message

from paysaga.v1 import events_pb2, payments_pb2
from services.common.crashpoints import crash_point
from services.common.ids import time_ordered_uuid
from services.common.messaging.cloudevents import EventMeta, InvalidEvent
from services.common.messaging.outbox import OutboxWriter
from services.common.persistence.transaction import Transaction
from services.common.timeutil import utcnow
from services.payment import metrics, statements
from services.payment.domain import Decision, decide_payment
from services.payment.models import CHARGE, REFUND

log = logging.getLogger(__name__)

#: A payment row (its columns by name), as the handlers read and write it.
PaymentRow = dict[str, Any]

_ORDER_EVENTS = (events_pb2.OrderPurchased, events_pb2.OrderFailed)

#: Why a purchase that reached the Payment service after its saga deadline was declined.
LATE_PURCHASE = "arrived after the saga deadline"

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


def _expect_rows(changed: int | None, expected: int, what: str) -> None:
    """Raise unless an UPDATE changed exactly the rows this batch read and locked (where the
    driver counts the rows of an executemany: None where not): never let a balance change
    go missing."""
    if changed is not None and changed != expected:
        raise RuntimeError(f"{what}: {changed} rows changed, {expected} expected")


def _payments(session: Transaction, order_ids: set[str]) -> dict[str, PaymentRow]:
    """The decided payments of these orders, by order id."""
    if not order_ids:
        return {}
    found = statements.SELECT_PAYMENTS.mappings(session, {"order_ids": list(order_ids)})
    return {row["order_id"]: row for row in found}


class ChargeOrders:
    """Topic `orders`: charge each OrderPurchased; give the money back for each OrderFailed.

    OrderPurchased: debit the price if the balance covers it; announce APPROVED or
    DECLINED. A purchase that arrives after its saga deadline (`deadline_time`, the moment
    the Order service may fail the order) is declined without a charge: its order fails
    anyway, and charging it would only hold the money until the refund. An order is
    decided once: its Payment row (keyed by order id) says it was.
    OrderFailed: if money was taken for the order and not yet given back, credit it back,
    record a REFUND transaction and announce it; if the order was not decided yet, record
    a declined Payment so a late OrderPurchased never charges it. Both events of one order
    share a key, so one consumer sees them in order; the Payment row and the unique
    (order, kind) transaction make replays and duplicates harmless.
    """

    def __init__(
        self, session: Transaction, outbox: OutboxWriter, events: Sequence[Message]
    ) -> None:
        self.session = session
        self.outbox = outbox
        order_events = [e for e in events if isinstance(e, _ORDER_EVENTS)]
        self.payments = _payments(session, {e.order_id for e in order_events})
        user_ids = sorted({e.user_id for e in order_events})
        #: Balances by user id, as this batch leaves them.
        self.balances: dict[int, int] = (
            {u: b for u, b in statements.SELECT_ACCOUNTS.rows(session, {"user_ids": user_ids})}
            if user_ids
            else {}
        )
        self.changed_accounts: set[int] = set()
        self.new_payments: list[PaymentRow] = []
        #: Order ids of payments given back in this batch.
        self.refunded: set[str] = set()
        #: Order ids of payments given back before, whose refund this batch announces again.
        self.refunds_announced_again: set[str] = set()
        #: New CHARGE and REFUND transactions.
        self.charges: list[dict[str, Any]] = []
        #: Decisions on OrderPurchased events, counted once the transaction commits.
        self.decisions = {"approved": 0, "declined": 0}
        #: Purchases whose deadline is before this arrived too late (one clock read a batch).
        self.now_seconds = utcnow().timestamp()

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
        balance = self.balances.get(event.user_id)
        if self._past_deadline(event):
            # Its order fails by its deadline anyway: the money stays with the user.
            decision = Decision(False, LATE_PURCHASE)
        else:
            decision = decide_payment(
                user_id=event.user_id, balance_cents=balance, amount_cents=event.amount_cents
            )
        if decision.approved and balance is not None:
            self.balances[event.user_id] = balance - event.amount_cents
            self.changed_accounts.add(event.user_id)
            # The ledger row goes with the debit: balances = start - charges + refunds, always.
            self.charges.append(
                _transaction(
                    time_ordered_uuid(), event.order_id, CHARGE, event.user_id, event.amount_cents
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

    def _past_deadline(self, event: events_pb2.OrderPurchased) -> bool:
        """Did the purchase arrive after its saga deadline? (Never, for a purchase without
        one: those of producers older than the field are charged as before.)"""
        if not event.HasField("deadline_time"):
            return False
        deadline = event.deadline_time
        return deadline.seconds + deadline.nanos / 1e9 < self.now_seconds

    def _decide(
        self, order_id: str, user_id: int, amount: int, approved: bool, reason: str
    ) -> None:
        payment: PaymentRow = {
            "order_id": order_id,
            "user_id": user_id,
            "amount_cents": amount,
            "approved": approved,
            "reason": reason,
            "refunded_at": None,
            "created_at": utcnow(),
        }
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
        if not payment["approved"]:
            log.info("nothing to give back for this failed order", extra=fields)
            return
        if payment["refunded_at"] is not None:
            if event.order_id not in self.refunded | self.refunds_announced_again:
                self.refunds_announced_again.add(event.order_id)  # once a batch at most
                self._announce_refund_again(event.order_id, payment, fields)
            return
        user_id, amount = payment["user_id"], payment["amount_cents"]
        if (user_id, amount) != (event.user_id, event.amount_cents):
            raise InvalidEvent(
                f"OrderFailed for order {event.order_id} says user {event.user_id} / "
                f"{event.amount_cents} cents, its payment was user {user_id} / {amount} cents"
            )
        # The payment's user is the event's (checked above): its account row is loaded.
        self.balances[user_id] += amount
        self.changed_accounts.add(user_id)
        payment["refunded_at"] = utcnow()
        self.refunded.add(event.order_id)
        transaction_id = time_ordered_uuid()
        self.charges.append(_transaction(transaction_id, event.order_id, REFUND, user_id, amount))
        outgoing = events_pb2.TransactionRecorded(
            order_id=event.order_id,
            user_id=user_id,
            amount_cents=amount,
            status=events_pb2.TRANSACTION_STATUS_SUCCESSFUL,
            transaction_id=transaction_id,
            kind=payments_pb2.TRANSACTION_KIND_REFUND,
        )
        self.outbox.add_event(outgoing, key=user_id, subject=event.order_id)
        log.warning(
            "money given back for a failed order",
            extra={**fields, "transaction_id": transaction_id},
        )

    def _announce_refund_again(
        self, order_id: str, payment: PaymentRow, fields: dict[str, Any]
    ) -> None:
        """An OrderFailed for money given back before: announce that REFUND again, under its
        own transaction id, so an Order service whose copy was lost (parked, dead-lettered)
        learns of it and stops re-announcing. Rare: one query, on this path only."""
        found = statements.SELECT_REFUND.rows(self.session, {"order_id": order_id})
        transaction_id = found[0][0] if found else None
        if transaction_id is None:
            log.info("nothing to give back for this failed order", extra=fields)
            return
        outgoing = events_pb2.TransactionRecorded(
            order_id=order_id,
            user_id=payment["user_id"],
            amount_cents=payment["amount_cents"],
            status=events_pb2.TRANSACTION_STATUS_SUCCESSFUL,
            transaction_id=transaction_id,
            kind=payments_pb2.TRANSACTION_KIND_REFUND,
        )
        self.outbox.add_event(outgoing, key=payment["user_id"], subject=order_id)
        log.info("money was given back before; the refund is announced again", extra=fields)

    def write(self) -> None:
        now = utcnow()
        if self.changed_accounts:
            changed = statements.UPDATE_BALANCE.execute_many(
                self.session,
                [
                    {"account_user_id": u, "balance_cents": self.balances[u], "updated_at": now}
                    for u in sorted(self.changed_accounts)
                ],
            )
            _expect_rows(changed, len(self.changed_accounts), "account balances")
        if self.new_payments:  # inserted with their refunded_at, if refunded in this batch
            statements.INSERT_PAYMENTS.execute(self.session, self.new_payments)
        stored_refunded = self.refunded - {p["order_id"] for p in self.new_payments}
        if stored_refunded:
            marked = statements.MARK_REFUNDED.execute_many(
                self.session,
                [
                    {"payment_order_id": o, "refunded_at": self.payments[o]["refunded_at"]}
                    for o in sorted(stored_refunded)
                ],
            )
            _expect_rows(marked, len(stored_refunded), "refunded payments")
        if self.charges:
            statements.INSERT_TRANSACTIONS.execute(self.session, self.charges)
        metrics.payments_decided_after_commit(self.session, self.decisions)


class RecordTransactions:
    """Topic `payments`: announce the CHARGE transaction of an approved payment, or that none
    was recorded. (The CHARGE row is written with the debit itself, in ChargeOrders, so the
    ledger always matches the balances; this hop only announces it.)"""

    def __init__(
        self, session: Transaction, outbox: OutboxWriter, events: Sequence[Message]
    ) -> None:
        self.session = session
        self.outbox = outbox
        order_ids = {e.order_id for e in events if isinstance(e, events_pb2.PaymentProcessed)}
        self.decided = _payments(session, order_ids)
        self.recorded: dict[str, str] = {
            order_id: transaction_id
            for order_id, transaction_id in statements.SELECT_CHARGES.rows(
                session, {"order_ids": list(order_ids)}
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
            payment["approved"],
            payment["amount_cents"],
            payment["user_id"],
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
                transaction_id = time_ordered_uuid()
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
            statements.INSERT_TRANSACTIONS.execute(self.session, self.transactions)
