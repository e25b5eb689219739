"""The topic -> event table in services/saga/topics.py matches events.proto."""

from __future__ import annotations

from collections import Counter

import pytest
from google.protobuf.descriptor import Descriptor

from paysaga.v1 import events_pb2
from services.common.messaging.topics import Topic
from services.saga.topics import KAFKA_TOPICS, ORDER_UPDATES, TOPICS

pytestmark = pytest.mark.contract

EVENTS_FILE = events_pb2.DESCRIPTOR
ALL_TOPICS = [*TOPICS.values(), ORDER_UPDATES]


def test_every_event_is_on_exactly_one_topic() -> None:
    on_topics = Counter(e.DESCRIPTOR.full_name for t in ALL_TOPICS for e in t.event_types)
    in_proto = {m.full_name for m in EVENTS_FILE.message_types_by_name.values()}
    assert in_proto - set(on_topics) == set(), "events.proto defines events on no topic"
    assert {name for name, n in on_topics.items() if n > 1} == set(), "an event on two topics"


@pytest.mark.parametrize("topic", ALL_TOPICS, ids=lambda t: t.name)
def test_topic_event_types_are_defined_in_events_proto(topic: Topic) -> None:
    for event_type in topic.event_types:
        check_event_in_events_proto(event_type.DESCRIPTOR)


def check_event_in_events_proto(descriptor: Descriptor) -> None:
    assert descriptor.file.name == EVENTS_FILE.name, (
        f"an event type {descriptor.full_name} is "
        f"defined in {descriptor.file.name}, not in {EVENTS_FILE.name}"
    )
    assert descriptor.containing_type is None, "an event is a top-level message"
    assert EVENTS_FILE.message_types_by_name.get(descriptor.name) is descriptor


@pytest.mark.parametrize("topic", ALL_TOPICS, ids=lambda t: t.name)
def test_topic_metadata(topic: Topic) -> None:
    full_name = topic.event_type.DESCRIPTOR.full_name
    assert TOPICS.get(topic.name, ORDER_UPDATES) is topic
    assert topic.ce_type == full_name
    assert full_name.startswith(f"{EVENTS_FILE.package}.")
    assert topic.dlt == f"{topic.name}.dlt"
    assert topic.dlt not in TOPICS
    assert topic.name in KAFKA_TOPICS
    for event_type in topic.event_types:
        assert topic.event_type_named(event_type.DESCRIPTOR.full_name) is event_type


def test_every_saga_topic_has_its_dead_letter_topic_created() -> None:
    assert {t.dlt for t in TOPICS.values()} <= set(KAFKA_TOPICS)
