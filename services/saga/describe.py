"""What a saga event says, in a few words, for the journal's step details (`paysaga orders
timeline`): a status, an outcome, a reason."""

from __future__ import annotations

from typing import Any

from google.protobuf.message import Message

from paysaga.v1 import events_pb2, orders_pb2, payments_pb2


def _name(enum: Any, value: int, prefix: str) -> str:
    try:
        return str(enum.Name(value)).removeprefix(prefix)
    except ValueError:
        return str(value)


def describe_event(event: Message) -> str:
    """What an event says, in a few words (a status, an outcome, a reason)."""
    reason = getattr(event, "reason", "")
    if isinstance(event, events_pb2.OrderUpdated):
        text = _name(orders_pb2.OrderStatus, event.order.status, "ORDER_STATUS_")
        reason = event.order.failure_reason
    elif isinstance(event, events_pb2.PaymentProcessed):
        text = _name(events_pb2.PaymentStatus, event.status, "PAYMENT_STATUS_")
    elif isinstance(event, events_pb2.TransactionRecorded):
        kind = event.kind or payments_pb2.TRANSACTION_KIND_CHARGE
        status = _name(events_pb2.TransactionStatus, event.status, "TRANSACTION_STATUS_")
        text = f"{_name(payments_pb2.TransactionKind, kind, 'TRANSACTION_KIND_')} {status}"
    elif isinstance(event, events_pb2.OrderPurchased):
        text = f"{event.amount_cents} cents, product {event.product_id}"
    else:
        text = ""
    if text and reason:
        return f"{text}: {reason}"
    return text or reason
