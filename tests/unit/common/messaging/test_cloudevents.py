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
