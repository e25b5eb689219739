"""Poison records for each saga topic: undecodable, truncated, of the wrong type, headerless."""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass

from google.protobuf.message import Message

from paysaga.v1 import events_pb2
from services.common.headers import Headers
from services.common.messaging.cloudevents import EventMeta
from services.common.messaging.topics import Topic
from services.saga.topics import TOPICS


@dataclass(frozen=True)
class Poison:
    """One record to inject; `key` is unique, so its dead letter can be found by it."""

    topic: str
    kind: str
    key: bytes
    value: bytes
    headers: Headers


def _valid(topic: str) -> Message:
    order_id = str(uuid.uuid4())
    if topic == "orders":
        return events_pb2.OrderPurchased(order_id=order_id, user_id=2, product_id=1, amount_cents=1)
    if topic == "payments":
        return events_pb2.PaymentProcessed(
            order_id=order_id, user_id=2, amount_cents=5000, status=1
        )
    return events_pb2.TransactionRecorded(order_id=order_id, user_id=2, amount_cents=5000, status=1)


def _headers(topic: Topic) -> Headers:
    """Headers as the real publisher of `topic` writes them."""
    return EventMeta.new(ce_type=topic.ce_type, source=topic.source).headers()


def poison_for(topic: str) -> list[Poison]:
    """The poison records for one topic, each of another kind."""
    own = TOPICS[topic]
    other = next(t for name, t in TOPICS.items() if name != topic)
    kinds: dict[str, tuple[bytes, Headers]] = {
        # An over-long varint: no protobuf parser accepts it.
        "random bytes": (b"\xff" * 11 + os.urandom(48), _headers(own)),
        "truncated protobuf": (_valid(topic).SerializeToString()[:12], _headers(own)),
        "wrong type": (_valid(other.name).SerializeToString(), _headers(other)),
        "missing headers": (_valid(topic).SerializeToString(), []),
        "empty payload": (b"", _headers(own)),
    }
    # Another event's bytes under this topic's own ce_type: the protobuf parses as this
    # topic's type, so only the handler's checks can catch it.
    lying = _valid(other.name)
    if isinstance(lying, events_pb2.TransactionRecorded):
        lying.ClearField("transaction_id")  # else field 5 breaks the OrderPurchased parse
    kinds["wrong type, lying ce_type"] = (lying.SerializeToString(), _headers(own))
    return [
        Poison(topic, kind, f"poison-{topic}-{kind}-{uuid.uuid4()}".encode(), value, headers)
        for kind, (value, headers) in kinds.items()
    ]


def all_poison() -> list[Poison]:
    return [p for topic in TOPICS for p in poison_for(topic)]
