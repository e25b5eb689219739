"""A topic table routes each event to its topic; an outbox stages events through its table."""

from __future__ import annotations

import pytest

from paysaga.v1 import events_pb2
from services.common.messaging.outbox import OutboxWriter
from services.common.messaging.topics import Topic, TopicTable

pytestmark = pytest.mark.unit

PURCHASES = Topic("purchases", events_pb2.OrderPurchased, "test/shop", (events_pb2.OrderFailed,))
UPDATES = Topic("updates", events_pb2.OrderUpdated, "test/shop")
TABLE = TopicTable(consumed=(PURCHASES,), fan_out=(UPDATES,))


def test_each_event_goes_on_the_topic_that_carries_its_type() -> None:
    assert TABLE.for_event(events_pb2.OrderPurchased()) is PURCHASES
    assert TABLE.for_event(events_pb2.OrderFailed()) is PURCHASES
    assert TABLE.for_event(events_pb2.OrderUpdated()) is UPDATES
    with pytest.raises(KeyError, match="PaymentProcessed"):
        TABLE.for_event(events_pb2.PaymentProcessed())


def test_a_cluster_needs_the_consumed_topics_their_dead_letter_topics_and_the_fan_out() -> None:
    assert TABLE.consumed == {"purchases": PURCHASES}
    assert TABLE.kafka_topics() == ["purchases", "purchases.dlt", "updates"]


def test_an_outbox_stages_an_event_on_its_topic_from_the_source_that_publishes_it() -> None:
    outbox = OutboxWriter(TABLE)
    meta = outbox.add_event(events_pb2.OrderUpdated(), key=1, subject="o-1")
    assert meta.source == "test/shop" and meta.subject == "o-1"
    assert [row["topic"] for row in outbox.rows] == ["updates"]


def test_an_outbox_without_a_table_stages_records_as_they_are_only() -> None:
    outbox = OutboxWriter(None)
    outbox.add_record(topic="purchases", key=None, value=b"x", headers=[], event_id="e-1")
    assert [row["topic"] for row in outbox.rows] == ["purchases"]
    with pytest.raises(TypeError, match="no topic table"):
        outbox.add_event(events_pb2.OrderPurchased(), key=1)
