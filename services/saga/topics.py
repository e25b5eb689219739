"""The saga's topics and the event types each carries: the single table both services use."""

from __future__ import annotations

from paysaga.v1 import events_pb2
from services.common.messaging.topics import Topic, TopicTable
from services.saga.describe import describe_event

ORDER_SERVICE = "paysaga/order"
PAYMENT_SERVICE = "paysaga/payment"

ORDERS = Topic("orders", events_pb2.OrderPurchased, ORDER_SERVICE, (events_pb2.OrderFailed,))
PAYMENTS = Topic("payments", events_pb2.PaymentProcessed, PAYMENT_SERVICE)
TRANSACTIONS = Topic("transactions", events_pb2.TransactionRecorded, PAYMENT_SERVICE)

#: Every order change, read by every Order replica without a consumer group (WatchOrders).
ORDER_UPDATES = Topic("order-updates", events_pb2.OrderUpdated, ORDER_SERVICE)

#: The saga's table, handed to the consumers, outboxes and admin APIs of both services.
SAGA_TOPICS = TopicTable(
    consumed=(ORDERS, PAYMENTS, TRANSACTIONS), fan_out=(ORDER_UPDATES,), describe=describe_event
)

#: topic name -> Topic for the saga's topics (consumed by a consumer group, with a DLT each).
TOPICS: dict[str, Topic] = SAGA_TOPICS.consumed

#: Every topic the services publish on: what a cluster must have before they start.
KAFKA_TOPICS: list[str] = SAGA_TOPICS.kafka_topics()
