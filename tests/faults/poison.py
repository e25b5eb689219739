"""Poison records for each saga topic: undecodable, truncated, of the wrong type, headerless."""

from __future__ import annotations

import os
import random
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


#: The header a hostile record's dead letter is found by (its key is a real user's).
HOSTILE_ID = "fault_hostile_id"
#: Characters that hurt: NUL (PostgreSQL text refuses it), 2-, 3- and 4-byte UTF-8.
_HOSTILE_CHARS = "a\x00é€\U0001f600"


def hostile_for(topic: str, key: bytes, rng: random.Random) -> list[Poison]:
    """Records crafted to break the dead-letter path itself, each of another kind, with
    random content from `rng`; all keyed `key` (a real user's: they share its partition).

    Each one is poison whatever database holds it (a wrong source, an unusable id or
    subject, a payload no parser takes), so it must end on `<topic>.dlt`; what it carries
    besides is what once made writing its dead letter fail.
    """
    own = TOPICS[topic]

    def text(size: int, chars: str = _HOSTILE_CHARS) -> str:
        return "".join(rng.choices(chars, k=size))

    def headers(**changed: bytes | None) -> Headers:
        base = dict(_headers(own))
        base.update(changed)
        return list(base.items())

    junk = b"\xff" * 11 + rng.randbytes(rng.randint(0, 300_000))
    payload = _valid(topic)
    long_order = text(100_000)
    with_long_order = type(payload)()
    with_long_order.CopyFrom(payload)
    with_long_order.order_id = long_order  # type: ignore[attr-defined]
    subject = payload.order_id.encode()  # type: ignore[attr-defined]
    kinds: dict[str, tuple[bytes, Headers]] = {
        # (A Kafka client cuts a header name at its first NUL: none in this one.)
        "header name of 70 KB": (
            junk,
            [*headers(), (text(70_000, _HOSTILE_CHARS.replace("\x00", "")), rng.randbytes(64))],
        ),
        "100 KB order id with NULs": (
            with_long_order.SerializeToString(),
            headers(ce_subject=long_order.encode()),
        ),
        "ce_time before year 1 in UTC": (
            payload.SerializeToString(),
            headers(ce_time=b"0001-01-01T00:00:00+01:00", ce_source=b"x", ce_subject=subject),
        ),
        "ce_time after year 9999 in UTC": (
            junk,
            headers(ce_time=b"9999-12-31T23:59:59-01:00", ce_subject=text(300).encode()),
        ),
        "NUL in ce_id": (payload.SerializeToString(), headers(ce_id=b"evt\x00" + junk[:30])),
        "ce_id of 10 KB": (payload.SerializeToString(), headers(ce_id=text(10_000).encode())),
        "binary and null header values": (
            payload.SerializeToString(),
            [*headers(ce_type=rng.randbytes(16), ce_subject=None), ("ce_id", None)],
        ),
        "redrive header of 200 KB with NULs": (
            payload.SerializeToString(),
            [*headers(ce_subject=subject), ("paysaga_redrive_id", text(50_000).encode())],
        ),
    }
    return [
        Poison(topic, kind, key, value, [*found, (HOSTILE_ID, str(uuid.uuid4()).encode())])
        for kind, (value, found) in kinds.items()
    ]
