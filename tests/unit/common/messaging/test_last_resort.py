"""When a poison record's full dead letter cannot be written, a last-resort one is.

The hop of test_consumer_narrowing (its stand-in handler `Ledger`, a real database of each
kind, Kafka replaced by in-memory records), with a journal that refuses dead-letter steps,
as a database refuses a value it cannot hold; and a record whose headers the Kafka client
cannot read.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import text
from sqlmodel import select

from services.common.headers import Headers
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import DeadLetter, SagaStep
from services.common.messaging.outbox import DLT_HEADERS, decode_headers
from services.common.observability import tracing
from tests.unit.common.messaging.test_consumer_narrowing import (  # noqa: F401 (the fixture)
    BUGGY_AMOUNT,
    Hop,
    applied,
    dead_letters,
    hop,
    inbox_ids,
    order_record,
    seven_orders,
)
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit


def refuse_dead_letter_steps(hop: Hop) -> None:  # noqa: F811 (the fixture's name)
    """Make the journal refuse every DEAD_LETTERED step (an IntegrityError, not transient)."""
    with hop.db.write() as session:
        if hop.db.is_sqlite:
            session.execute(
                text(
                    "CREATE TRIGGER refuse_dead_letter_steps BEFORE INSERT ON saga_step"
                    " WHEN NEW.kind = 'DEAD_LETTERED'"
                    " BEGIN SELECT RAISE(ABORT, 'dead-letter steps refused'); END"
                )
            )
        else:
            session.execute(
                text(
                    "ALTER TABLE saga_step ADD CONSTRAINT refuse_dead_letter_steps"
                    " CHECK (kind <> 'DEAD_LETTERED')"
                )
            )


def test_a_dead_letter_the_database_refuses_is_written_as_a_last_resort(
    hop: Hop,  # noqa: F811 (the fixture)
) -> None:
    refuse_dead_letter_steps(hop)
    records = seven_orders(order_3=BUGGY_AMOUNT)
    hop.consumer.process_batch(records)  # type: ignore[arg-type]

    # The six others applied once, in order; the partition moved past all seven.
    assert applied(hop.db) == ["order-0", "order-1", "order-2", "order-4", "order-5", "order-6"]
    assert hop.kafka.stored == [[("orders", 0, 14), ("orders", 1, 13)]]
    # The record for orders.dlt: the poison's bytes, its headers, the dlt_* ones.
    poison = records[3]
    [(dead, headers)] = dead_letters(hop.db)
    assert (dead.key, dead.value) == (poison.key(), poison.value())
    consumed = list(poison.headers())
    assert headers[: len(consumed)] == consumed
    found = dict(headers[len(consumed) :])
    assert tuple(found) == DLT_HEADERS
    assert (found["dlt_topic"], found["dlt_partition"], found["dlt_offset"]) == (
        b"orders",
        b"1",
        b"11",
    )
    reason = (found["dlt_reason"] or b"").decode()
    assert reason.startswith("RuntimeError: cannot apply order-3; its dead letter failed: ")
    assert "IntegrityError" in reason
    # The dead_letter row `paysaga dlq` reads: coordinates, bytes, error; nothing parsed.
    with hop.db.read() as session:
        [letter] = session.exec(select(DeadLetter)).all()
        steps = session.exec(select(SagaStep).where(SagaStep.kind == "DEAD_LETTERED")).all()
    assert (letter.id, letter.topic, letter.kafka_partition, letter.kafka_offset) == (
        "orders:1:11",
        "orders",
        1,
        11,
    )
    assert (letter.key, letter.value, decode_headers(letter.headers)) == (
        poison.key(),
        poison.value(),
        consumed,
    )
    assert (letter.event_id, letter.event_type, letter.order_id) == ("", "", "")
    assert letter.reason == reason
    assert steps == []
    # Its coordinates are its inbox key: redelivered, it is dropped.
    assert "orders/1/11" in inbox_ids(hop.db)
    hop.consumer.process_batch(records)  # type: ignore[arg-type]
    assert len(dead_letters(hop.db)) == 1
    assert len(applied(hop.db)) == 6


class UnreadableHeaders(FakeRecord):
    """A record whose header name is not UTF-8: confluent-kafka raises on the first read of
    its headers, and a second read may crash the process."""

    reads = 0

    def headers(self) -> Headers:
        self.reads += 1
        if self.reads > 1:
            raise AssertionError("headers read a second time")
        raise SystemError("<built-in method headers> returned a result with an exception set")


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on (a span reads a record's headers too), into memory, for one test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer(provider.get_tracer("test"))
    yield exporter
    tracing.use_tracer(None)
    provider.shutdown()


def test_a_record_whose_headers_cannot_be_read_is_dead_lettered_reading_them_once(
    hop: Hop,  # noqa: F811 (the fixture)
    spans: InMemorySpanExporter,
) -> None:
    good = order_record(4, 8, "order-after")
    bad = UnreadableHeaders("orders", 4, 7, good.value(), [], b"key-7")
    hop.consumer.process_batch([bad, good])  # type: ignore[list-item]

    assert bad.reads == 1
    assert applied(hop.db) == ["order-after"]
    assert hop.kafka.stored == [[("orders", 4, 9)]]
    [(dead, headers)] = dead_letters(hop.db)
    assert (dead.key, dead.value) == (b"key-7", good.value())
    assert tuple(name for name, _ in headers) == DLT_HEADERS
    assert dict(headers)["dlt_reason"] == (
        b"its headers cannot be read: SystemError: "
        b"<built-in method headers> returned a result with an exception set"
    )
    with hop.db.read() as session:
        assert session.get(ProcessedEvent, "orders/4/7") is not None
    assert len(spans.get_finished_spans()) == 2
