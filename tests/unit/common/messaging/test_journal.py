"""The saga journal and dead-letter redrive over a real SQLite file (Kafka replaced by records).

A poison record is dead-lettered with its steps; once its cause is fixed, redriving it
twice sends two copies with one redrive id, and the hop applies exactly one of them.
"""

from __future__ import annotations

import pytest
from sqlmodel import col, select

from paysaga.v1 import events_pb2
from services.common.messaging.cloudevents import EventMeta
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import (
    REDRIVE_HEADER,
    TABLES,
    DeadLetter,
    Redrive,
    SagaStep,
    StepKind,
    parse_time,
    redrive_id,
)
from services.common.messaging.outbox import OutboxRecord, decode_headers
from services.common.operations import deadletters
from services.common.persistence.db import Database
from services.payment.handlers import RecordTransactions
from services.payment.models import Account, Payment, Transaction
from services.saga.topics import PAYMENTS, SAGA_TOPICS
from tests.unit.fakes import FakeConsumer, FakeRecord

pytestmark = pytest.mark.unit

ORDER_ID = "order-poison-1"


@pytest.fixture
def db(store_url: str) -> Database:
    database = Database(store_url, instance="payment-7")
    database.create_tables([Account, Payment, Transaction, OutboxRecord, ProcessedEvent, *TABLES])
    return database


def hop(db: Database) -> EventConsumer:
    return EventConsumer(
        db,
        FakeConsumer(),  # type: ignore[arg-type]
        {PAYMENTS.name: RecordTransactions},
        topics=SAGA_TOPICS,
    )


def payment_processed(offset: int) -> FakeRecord:
    """An APPROVED PaymentProcessed for ORDER_ID: poison while no payment was decided."""
    meta = EventMeta.new(ce_type=PAYMENTS.ce_type, source=PAYMENTS.source, subject=ORDER_ID)
    event = events_pb2.PaymentProcessed(
        order_id=ORDER_ID, user_id=1, amount_cents=5000, status=events_pb2.PAYMENT_STATUS_APPROVED
    )
    return FakeRecord("payments", 2, offset, event.SerializeToString(), meta.headers())


def outbox_rows(db: Database, topic: str) -> list[OutboxRecord]:
    with db.read() as session:
        query = select(OutboxRecord).where(col(OutboxRecord.topic) == topic)
        return list(session.exec(query.order_by(col(OutboxRecord.seq))))


def steps(db: Database, kind: StepKind) -> list[SagaStep]:
    with db.read() as session:
        return list(session.exec(select(SagaStep).where(col(SagaStep.kind) == kind.value)))


def as_record(row: OutboxRecord, offset: int) -> FakeRecord:
    """The outbox row as the consumer would read it back from Kafka."""
    return FakeRecord(
        row.topic, 2, offset, row.value or b"", list(decode_headers(row.headers)), row.key
    )


def test_redrive_id_is_derived_from_the_dead_letter_only() -> None:
    assert redrive_id("payments:2:17") == "redrive:payments:2:17"
    assert redrive_id("payments:2:17") == redrive_id("payments:2:17")
    assert redrive_id("payments:2:17") != redrive_id("payments:2:18")


def test_a_poison_record_is_dead_lettered_with_its_steps(db: Database) -> None:
    hop(db).process_batch([payment_processed(17)])  # type: ignore[list-item]
    letter = deadletters.get_dead_letter(db, "payments:2:17")
    assert letter.order_id == ORDER_ID and letter.event_type == PAYMENTS.ce_type
    assert "no payment was decided" in letter.reason
    [step] = steps(db, StepKind.DEAD_LETTERED)
    assert (step.order_id, step.kafka_partition, step.kafka_offset) == (ORDER_ID, 2, 17)
    assert step.replica == "payment-7" and step.produced_at is not None
    assert len(outbox_rows(db, "payments.dlt")) == 1
    with pytest.raises(deadletters.NoSuchDeadLetter):
        deadletters.get_dead_letter(db, "payments:2:18")


def test_a_redriven_dead_letter_is_applied_once_however_often_redriven(db: Database) -> None:
    hop(db).process_batch([payment_processed(17)])  # type: ignore[list-item]
    with db.write() as session:  # the fix: the payment it needed
        session.add(Payment(order_id=ORDER_ID, user_id=1, amount_cents=5000, approved=True))
    first = deadletters.redrive(db, ids=["payments:2:17"], requested_by="alice")
    second = deadletters.redrive(db, ids=["payments:2:17"], requested_by="bob")
    assert [(r.redrive_id, r.redrive_count) for r in first.send + second.send] == [
        ("redrive:payments:2:17", 1),
        ("redrive:payments:2:17", 2),
    ]
    copies = outbox_rows(db, "payments")
    assert len(copies) == 2
    for copy in copies:
        headers = dict(decode_headers(copy.headers))
        assert headers[REDRIVE_HEADER] == b"redrive:payments:2:17"
        assert "dlt_reason" not in headers
    consumer = hop(db)
    consumer.process_batch([as_record(copies[0], 40)])  # type: ignore[list-item]
    consumer.process_batch([as_record(copies[1], 41)])  # type: ignore[list-item]
    assert len(outbox_rows(db, "transactions")) == 1, "applied once"
    [applied] = steps(db, StepKind.APPLIED)
    assert (applied.kafka_offset, applied.order_id) == (40, ORDER_ID)
    assert len(steps(db, StepKind.REDRIVEN)) == 2
    letter = deadletters.get_dead_letter(db, "payments:2:17")
    assert (letter.redrive_count, letter.redriven_by) == (2, "bob")
    with db.read() as session:
        assert len(list(session.exec(select(Redrive)))) == 2
        inbox = {row.event_id for row in session.exec(select(ProcessedEvent))}
    assert {letter.event_id, "redrive:payments:2:17"} <= inbox


def test_redrive_all_of_a_topic_and_unknown_ids(db: Database) -> None:
    hop(db).process_batch([payment_processed(17), payment_processed(18)])  # type: ignore[list-item]
    with pytest.raises(deadletters.NoSuchDeadLetter, match="payments:2:99"):
        deadletters.redrive(db, ids=["payments:2:17", "payments:2:99"], requested_by="alice")
    assert outbox_rows(db, "payments") == [], "nothing sent when an id is unknown"
    done = deadletters.redrive(db, topic="payments", requested_by="alice")
    assert sorted(r.id for r in done.send) == ["payments:2:17", "payments:2:18"]
    assert deadletters.redrive(db, topic="payments", requested_by="alice").send == []
    with db.read() as session:
        assert all(d.redrive_count == 1 for d in session.exec(select(DeadLetter)))
    assert deadletters.list_dead_letters(db, topic="orders") == []
    assert len(deadletters.list_dead_letters(db, topic="payments", limit=1)) == 1


def test_texts_with_nul_are_stored_escaped() -> None:
    from services.common.messaging.journal import _storable

    row = _storable({"order_id": "nul\x00id", "kafka_offset": 3, "value": b"\x00"})
    assert row == {"order_id": "nul\\x00id", "kafka_offset": 3, "value": b"\x00"}


def test_parse_time() -> None:
    moment = parse_time("2026-11-26T09:00:00.250000Z")
    assert moment is not None and moment.microsecond == 250000 and moment.tzinfo is not None
    assert parse_time("yesterday") is None
