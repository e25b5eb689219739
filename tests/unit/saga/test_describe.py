"""The saga's events described in a few words for the journal, and handed in with its table."""

import pytest

from paysaga.v1 import events_pb2
from services.common.messaging.outbox import OutboxWriter
from services.saga.describe import describe_event
from services.saga.topics import SAGA_TOPICS

pytestmark = pytest.mark.unit


def test_events_are_described_by_status_and_reason() -> None:
    event = events_pb2.PaymentProcessed(
        status=events_pb2.PAYMENT_STATUS_DECLINED, reason="insufficient balance"
    )
    assert describe_event(event) == "DECLINED: insufficient balance"
    refund = events_pb2.TransactionRecorded(status=events_pb2.TRANSACTION_STATUS_SUCCESSFUL)
    assert describe_event(refund) == "CHARGE SUCCESSFUL"


def test_a_staged_event_is_journaled_with_the_table_s_description() -> None:
    outbox = OutboxWriter(SAGA_TOPICS)
    event = events_pb2.OrderPurchased(order_id="o-1", user_id=1, product_id=2, amount_cents=5000)
    outbox.add_event(event, key=1, subject="o-1")
    [step] = outbox.journal.steps
    assert step["detail"] == "5000 cents, product 2"
