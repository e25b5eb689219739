"""Topics as a type: a topic, the protobuf events it carries, and a table of them.

The saga's own table (which events travel on which topic) lives with the services, which
hand it to the mechanisms here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from google.protobuf.message import Message


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


class TopicTable:
    """Which events travel on which topic.

    `consumed` topics are read by a consumer group, each with a dead-letter topic;
    `fan_out` topics are read by every replica from their end, without a group.
    """

    def __init__(
        self,
        consumed: Iterable[Topic],
        fan_out: Iterable[Topic] = (),
        describe: Callable[[Message], str] = lambda event: str(getattr(event, "reason", "")),
    ) -> None:
        #: What an event says in a few words, for the journal's step details.
        self.describe = describe
        #: topic name -> Topic, for the topics consumed by a consumer group.
        self.consumed: dict[str, Topic] = {topic.name: topic for topic in consumed}
        self.fan_out: tuple[Topic, ...] = tuple(fan_out)
        self._all = (*self.consumed.values(), *self.fan_out)

    def for_event(self, event: Message) -> Topic:
        """The topic an event of this type is published on."""
        for topic in self._all:
            if isinstance(event, topic.event_types):
                return topic
        raise KeyError(f"no topic carries {type(event).__name__}")

    def kafka_topics(self) -> list[str]:
        """Every topic the services publish on: what a cluster must have before they start."""
        return [
            *self.consumed,
            *(topic.dlt for topic in self.consumed.values()),
            *(topic.name for topic in self.fan_out),
        ]
