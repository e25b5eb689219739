"""CloudEvents binary-mode headers: what decodes, and why the rest is rejected."""

import pytest

from paysaga.v1 import events_pb2
from services.common.messaging.cloudevents import EventMeta, InvalidEvent, decode
from services.saga.topics import ORDERS, PAYMENTS

pytestmark = pytest.mark.unit

EVENT = events_pb2.OrderPurchased(order_id="o-1", user_id=1, product_id=1, amount_cents=5000)


def _headers() -> list[tuple[str, bytes]]:
    return EventMeta.new(ce_type=ORDERS.ce_type, source=ORDERS.source, subject="o-1").headers()


def test_round_trip() -> None:
    meta, event = decode(ORDERS, _headers(), EVENT.SerializeToString())
    assert event == EVENT
    assert (meta.type, meta.source, meta.subject) == (
        "paysaga.v1.OrderPurchased",
        "paysaga/order",
        "o-1",
    )


def test_missing_headers_are_named() -> None:
    headers = [h for h in _headers() if h[0] not in ("ce_id", "ce_source")]
    with pytest.raises(InvalidEvent, match="missing CloudEvents header.*ce_id, ce_source"):
        decode(ORDERS, headers, EVENT.SerializeToString())


def test_event_of_another_topic_is_rejected() -> None:
    with pytest.raises(InvalidEvent, match="does not belong on topic 'payments'"):
        decode(PAYMENTS, _headers(), EVENT.SerializeToString())


def test_truncated_payload_is_rejected() -> None:
    with pytest.raises(InvalidEvent, match="not a valid paysaga.v1.OrderPurchased"):
        decode(ORDERS, _headers(), EVENT.SerializeToString()[:3])


def test_empty_payload_is_rejected() -> None:
    with pytest.raises(InvalidEvent, match="empty payload"):
        decode(ORDERS, _headers(), b"")


def test_event_from_a_service_that_does_not_publish_there_is_rejected() -> None:
    headers = EventMeta.new(ce_type=ORDERS.ce_type, source="paysaga/payment").headers()
    with pytest.raises(InvalidEvent, match="source 'paysaga/payment' does not publish on topic"):
        decode(ORDERS, headers, EVENT.SerializeToString())


def test_subject_must_be_the_events_order() -> None:
    headers = EventMeta.new(ce_type=ORDERS.ce_type, source=ORDERS.source, subject="o-2").headers()
    with pytest.raises(InvalidEvent, match="ce_subject 'o-2' is not the event's order_id 'o-1'"):
        decode(ORDERS, headers, EVENT.SerializeToString())


@pytest.mark.parametrize(
    ("name", "value", "why"),
    [
        ("ce_id", "e" * 256, "ce_id is 256 characters long; at most 255"),
        ("ce_id", "evt\x00-1", "ce_id 'evt\\\\x00-1' holds a NUL character"),
        ("ce_subject", "o-1" * 100, "ce_subject is 300 characters long; at most 255"),
        ("ce_subject", "o-1\x00", "ce_subject 'o-1\\\\x00' holds a NUL character"),
    ],
)
def test_an_id_or_subject_no_index_can_hold_is_rejected(name: str, value: str, why: str) -> None:
    """The inbox and the journal key rows by them: a NUL or 100 KB one must not reach them."""
    headers = [(k, v) for k, v in _headers() if k != name] + [(name, value.encode())]
    with pytest.raises(InvalidEvent, match=why):
        decode(ORDERS, headers, EVENT.SerializeToString())


def test_a_refused_value_is_repeated_cut_short() -> None:
    headers = [(k, v) for k, v in _headers() if k != "ce_type"] + [("ce_type", b"x" * 100_000)]
    with pytest.raises(InvalidEvent) as refused:
        decode(ORDERS, headers, EVENT.SerializeToString())
    assert len(str(refused.value)) < 300
    assert "(100000 characters)" in str(refused.value)
