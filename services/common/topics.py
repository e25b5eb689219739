"""The saga's topics and the one event type each carries: the single table both services use."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from paysaga.v1 import events_pb2


@dataclass(frozen=True)
class Topic:
    """A saga topic, the protobuf event type on it, who publishes it, and its dead-letter topic."""

    name: str
    event_type: type[Message]
    #: CloudEvents `source` of the only service that publishes on this topic.
    source: str

    @property
    def dlt(self) -> str:
        return f"{self.name}.dlt"

    @property
    def ce_type(self) -> str:
        """CloudEvents `type` of this topic's events: the protobuf full name."""
        return self.event_type.DESCRIPTOR.full_name


ORDER_SERVICE = "paysaga/order"
PAYMENT_SERVICE = "paysaga/payment"

ORDERS = Topic("orders", events_pb2.OrderPurchased, ORDER_SERVICE)
PAYMENTS = Topic("payments", events_pb2.PaymentProcessed, PAYMENT_SERVICE)
TRANSACTIONS = Topic("transactions", events_pb2.TransactionRecorded, PAYMENT_SERVICE)

#: topic name -> Topic; the one place that says which event travels where.
TOPICS: dict[str, Topic] = {t.name: t for t in (ORDERS, PAYMENTS, TRANSACTIONS)}


def topic_for_event(event: Message) -> Topic:
    """The topic an event of this type is published on."""
    for topic in TOPICS.values():
        if isinstance(event, topic.event_type):
            return topic
    raise KeyError(f"no topic carries {type(event).__name__}")
