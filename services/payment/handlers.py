"""Payment service event handlers: charge on `orders`, record a transaction on `payments`."""

from __future__ import annotations

import logging

from google.protobuf.message import Message
from sqlmodel import Session, select

from paysaga.v1 import events_pb2
from services.common.cloudevents import EventMeta, InvalidEvent
from services.common.outbox import add_event
from services.common.timeutil import utcnow
from services.payment.domain import decide_payment
from services.payment.models import Account, Payment, Transaction

log = logging.getLogger(__name__)


def _check_common(order_id: str, user_id: int, amount_cents: int) -> None:
    if not order_id:
        raise InvalidEvent("order_id is empty")
    if user_id <= 0:
        raise InvalidEvent(f"user_id must be positive, got {user_id}")
    if amount_cents <= 0:
        raise InvalidEvent(f"amount_cents must be positive, got {amount_cents}")


def on_order_purchased(session: Session, event: Message, meta: EventMeta) -> None:
    """Debit the user if the balance covers the price; announce APPROVED or DECLINED."""
    assert isinstance(event, events_pb2.OrderPurchased)
    _check_common(event.order_id, event.user_id, event.amount_cents)
    fields = {"order_id": event.order_id, "event_id": meta.id, "user_id": event.user_id}
    if session.get(Payment, event.order_id) is not None:
        log.info("order already charged or declined; event ignored", extra=fields)
        return
    account = session.exec(
        select(Account).where(Account.user_id == event.user_id).with_for_update()
    ).first()
    decision = decide_payment(
        user_id=event.user_id,
        balance_cents=account.balance_cents if account else None,
        amount_cents=event.amount_cents,
    )
    if decision.approved and account is not None:
        account.balance_cents -= event.amount_cents
        account.updated_at = utcnow()
        session.add(account)
    session.add(
        Payment(
            order_id=event.order_id,
            user_id=event.user_id,
            amount_cents=event.amount_cents,
            approved=decision.approved,
            reason=decision.reason,
        )
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
    add_event(session, outgoing, key=event.user_id, subject=event.order_id)
    log.info(
        "payment decided",
        extra={**fields, "approved": decision.approved, "reason": decision.reason},
    )


def on_payment_processed(session: Session, event: Message, meta: EventMeta) -> None:
    """Record a transaction for an approved payment; announce whether one was recorded."""
    assert isinstance(event, events_pb2.PaymentProcessed)
    _check_common(event.order_id, event.user_id, event.amount_cents)
    fields = {"order_id": event.order_id, "event_id": meta.id}
    payment = session.get(Payment, event.order_id)
    if payment is None:
        raise InvalidEvent(f"no payment was decided for order {event.order_id}")
    approved = event.status == events_pb2.PAYMENT_STATUS_APPROVED
    if event.status not in (events_pb2.PAYMENT_STATUS_APPROVED, events_pb2.PAYMENT_STATUS_DECLINED):
        raise InvalidEvent(f"payment status {event.status} is neither APPROVED nor DECLINED")
    if (approved, event.amount_cents, event.user_id) != (
        payment.approved,
        payment.amount_cents,
        payment.user_id,
    ):
        raise InvalidEvent(f"event does not match the payment decided for order {event.order_id}")
    outgoing = events_pb2.TransactionRecorded(
        order_id=event.order_id, user_id=event.user_id, amount_cents=event.amount_cents
    )
    if approved:
        existing = session.exec(
            select(Transaction).where(Transaction.order_id == event.order_id)
        ).first()
        if existing is not None:
            log.info("transaction already recorded; event ignored", extra=fields)
            return
        transaction = Transaction(
            order_id=event.order_id, user_id=event.user_id, amount_cents=event.amount_cents
        )
        session.add(transaction)
        outgoing.status = events_pb2.TRANSACTION_STATUS_SUCCESSFUL
        outgoing.transaction_id = transaction.id
    else:
        outgoing.status = events_pb2.TRANSACTION_STATUS_UNSUCCESSFUL
        outgoing.reason = event.reason or "payment declined"
    add_event(session, outgoing, key=event.user_id, subject=event.order_id)
    log.info("transaction outcome", extra={**fields, "recorded": approved})
