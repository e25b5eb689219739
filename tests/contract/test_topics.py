"""The topic -> event table in services/common/topics.py matches events.proto."""

from __future__ import annotations

from collections import Counter

import pytest

from paysaga.v1 import events_pb2
from services.common.topics import TOPICS, Topic

pytestmark = pytest.mark.contract

EVENTS_FILE = events_pb2.DESCRIPTOR


def test_every_event_is_on_exactly_one_topic() -> None:
    on_topics = Counter(t.event_type.DESCRIPTOR.full_name for t in TOPICS.values())
    in_proto = {m.full_name for m in EVENTS_FILE.message_types_by_name.values()}
    assert in_proto - set(on_topics) == set(), "events.proto defines events on no topic"
    assert {name for name, n in on_topics.items() if n > 1} == set(), "an event on two topics"


@pytest.mark.parametrize("topic", list(TOPICS.values()), ids=lambda t: t.name)
def test_topic_event_type_is_defined_in_events_proto(topic: Topic) -> None:
    descriptor = topic.event_type.DESCRIPTOR
    assert descriptor.file.name == EVENTS_FILE.name, (
        f"topic {topic.name!r} carries {descriptor.full_name}, "
        f"defined in {descriptor.file.name}, not in {EVENTS_FILE.name}"
    )
    assert descriptor.containing_type is None, "an event is a top-level message"
    assert EVENTS_FILE.message_types_by_name.get(descriptor.name) is descriptor


@pytest.mark.parametrize("topic", list(TOPICS.values()), ids=lambda t: t.name)
def test_topic_metadata(topic: Topic) -> None:
    full_name = topic.event_type.DESCRIPTOR.full_name
    assert TOPICS[topic.name] is topic
    assert topic.ce_type == full_name
    assert full_name.startswith(f"{EVENTS_FILE.package}.")
    assert topic.dlt == f"{topic.name}.dlt"
    assert topic.dlt not in TOPICS
