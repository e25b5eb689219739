"""The saga's topics and the event types each carries: the single table both services use."""

from __future__ import annotations

from dataclasses import dataclass

from google.protobuf.message import Message

from paysaga.v1 import events_pb2


@dataclass(frozen=True)
class Topic:
    """A topic, the protobuf event types on it, who publishes it, and its dead-letter topic."""

    name: str
    #: The topic's main event type (its CloudEvents `type` is `ce_type`).
    event_type: type[Message]
    #: CloudEvents `source` of the only service that publishes on this topic.
    source: str
    #: Further event types the topic carries; a record's `ce_type` says which one it holds.
    more_event_types: tuple[type[Message], ...] = ()

    @property
    def event_types(self) -> tuple[type[Message], ...]:
        return (self.event_type, *self.more_event_types)

    @property
    def dlt(self) -> str:
        return f"{self.name}.dlt"

    @property
    def ce_type(self) -> str:
        """CloudEvents `type` of this topic's main event: the protobuf full name."""
        return self.event_type.DESCRIPTOR.full_name

    def event_type_named(self, ce_type: str) -> type[Message] | None:
        """The event type on this topic whose CloudEvents `type` is `ce_type`, else None."""
        for event_type in self.event_types:
            if event_type.DESCRIPTOR.full_name == ce_type:
                return event_type
        return None


ORDER_SERVICE = "paysaga/order"
PAYMENT_SERVICE = "paysaga/payment"

ORDERS = Topic("orders", events_pb2.OrderPurchased, ORDER_SERVICE, (events_pb2.OrderFailed,))
PAYMENTS = Topic("payments", events_pb2.PaymentProcessed, PAYMENT_SERVICE)
TRANSACTIONS = Topic("transactions", events_pb2.TransactionRecorded, PAYMENT_SERVICE)

#: topic name -> Topic for the saga's topics (consumed by a consumer group, with a DLT each).
TOPICS: dict[str, Topic] = {t.name: t for t in (ORDERS, PAYMENTS, TRANSACTIONS)}

#: Every order change, read by every Order replica without a consumer group (WatchOrders).
ORDER_UPDATES = Topic("order-updates", events_pb2.OrderUpdated, ORDER_SERVICE)

#: Every topic the services publish on: what a cluster must have before they start.
KAFKA_TOPICS: list[str] = [
    *TOPICS,
    *(topic.dlt for topic in TOPICS.values()),
    ORDER_UPDATES.name,
]


def topic_for_event(event: Message) -> Topic:
    """The topic an event of this type is published on."""
    for topic in (*TOPICS.values(), ORDER_UPDATES):
        if isinstance(event, topic.event_types):
            return topic
    raise KeyError(f"no topic carries {type(event).__name__}")
