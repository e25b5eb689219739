"""Trace context over Kafka headers: carried by the outbox, followed (or tolerated) by a hop."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from sqlmodel import select

from services.common.headers import Headers
from services.common.messaging.outbox import OutboxRecord, decode_headers
from services.common.observability import tracing
from services.common.observability.logs import JsonFormatter, TraceIds
from services.common.persistence.db import Database
from services.common.persistence.group_commit import GroupCommitter
from tests.unit.common.messaging.test_hop import hop, order_record  # noqa: F401 (the fixture)
from tests.unit.fakes import FakeRecord

pytestmark = pytest.mark.unit

FOREIGN_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
FOREIGN_SPAN = "00f067aa0ba902b7"
FOREIGN = f"00-{FOREIGN_TRACE}-{FOREIGN_SPAN}-01"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """Tracing on, into memory, for one test."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer(provider.get_tracer("test"))
    yield exporter
    tracing.use_tracer(None)
    provider.shutdown()


def record(headers: Headers) -> FakeRecord:
    return FakeRecord("orders", 2, 7, b"", headers)


def consumer_span(headers: Headers, exporter: InMemorySpanExporter) -> ReadableSpan:
    with tracing.EventSpans("paysaga-payment") as spans, spans.handling(record(headers), "e-1"):
        pass
    (span,) = exporter.get_finished_spans()
    return span


def test_a_record_with_a_traceparent_gets_a_child_span(spans: InMemorySpanExporter) -> None:
    span = consumer_span([("traceparent", FOREIGN.encode())], spans)
    assert span.parent is not None
    assert format(span.context.trace_id, "032x") == FOREIGN_TRACE
    assert format(span.parent.span_id, "016x") == FOREIGN_SPAN
    assert span.kind == trace.SpanKind.CONSUMER
    assert span.name == "process orders"
    assert span.attributes is not None
    assert span.attributes["messaging.destination.partition.id"] == "2"
    assert span.attributes["messaging.kafka.offset"] == 7
    assert span.attributes["messaging.operation.name"] == "process"
    assert span.attributes["messaging.operation.type"] == "process"
    (link,) = span.links
    assert format(link.context.trace_id, "032x") == FOREIGN_TRACE
    assert format(link.context.span_id, "016x") == FOREIGN_SPAN


def test_the_link_goes_to_the_cloudevents_creation_context_when_there_is_one(
    spans: InMemorySpanExporter,
) -> None:
    created = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    span = consumer_span(
        [("traceparent", FOREIGN.encode()), ("ce_traceparent", created.encode())], spans
    )
    assert span.parent is not None and format(span.parent.span_id, "016x") == FOREIGN_SPAN
    (link,) = span.links
    assert format(link.context.span_id, "016x") == "b7ad6b7169203331"


def test_a_new_trace_has_no_link(spans: InMemorySpanExporter) -> None:
    assert consumer_span([], spans).links == ()


def test_the_cloudevents_extension_header_is_followed_too(spans: InMemorySpanExporter) -> None:
    span = consumer_span([("ce_traceparent", FOREIGN.encode())], spans)
    assert format(span.context.trace_id, "032x") == FOREIGN_TRACE


@pytest.mark.parametrize(
    "headers",
    [
        [],
        [("traceparent", b"00-not-a-trace-01")],
        [("traceparent", b"\xff\xfe\x00")],
        [("traceparent", None)],
        [("traceparent", b"00-" + b"0" * 32 + b"-" + b"0" * 16 + b"-01")],  # all-zero ids
        [("traceparent", b"ff-" + FOREIGN_TRACE.encode() + b"-" + FOREIGN_SPAN.encode() + b"-01")],
    ],
    ids=["missing", "malformed", "not-utf8", "null", "zero-ids", "forbidden-version"],
)
def test_a_missing_or_malformed_traceparent_starts_a_new_trace(
    headers: Headers, spans: InMemorySpanExporter
) -> None:
    span = consumer_span(headers, spans)
    assert span.parent is None
    assert span.context.trace_id != int(FOREIGN_TRACE, 16)


def test_events_written_while_handling_carry_the_childs_context(
    spans: InMemorySpanExporter,
) -> None:
    with (
        tracing.EventSpans() as events,
        events.handling(record([("traceparent", FOREIGN.encode())])),
    ):
        headers = dict(tracing.current_headers())
        current = trace.get_current_span().get_span_context()
    _, trace_id, span_id, _ = headers["traceparent"].decode().split("-")
    assert (trace_id, span_id) == (FOREIGN_TRACE, format(current.span_id, "016x"))


def test_spans_end_with_their_transaction_and_say_when_it_failed(
    spans: InMemorySpanExporter,
) -> None:
    with pytest.raises(RuntimeError), tracing.EventSpans() as events:
        with events.handling(record([])):
            pass
        assert spans.get_finished_spans() == ()  # open until the transaction ends
        raise RuntimeError("database went away")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert "database went away" in (span.status.description or "")


def test_a_hop_passes_the_context_on_through_the_outbox(
    hop: Any,  # noqa: F811 (the fixture)
    spans: InMemorySpanExporter,
) -> None:
    consumer, db, _ = hop
    incoming = order_record(0, "order-t", 5000)
    incoming._headers = [*incoming._headers, ("traceparent", FOREIGN.encode())]
    consumer.process_batch([incoming])
    (span,) = spans.get_finished_spans()
    with db.read() as session:
        (row,) = session.exec(select(OutboxRecord)).all()
    traceparent = dict(decode_headers(row.headers))["traceparent"]
    assert traceparent is not None
    assert traceparent.decode() == f"00-{FOREIGN_TRACE}-{format(span.context.span_id, '016x')}-01"
    assert span.attributes is not None
    assert span.attributes["paysaga.order_id"] == "order-t"


def test_a_dead_lettered_event_marks_its_span_and_keeps_its_header(
    hop: Any,  # noqa: F811 (the fixture)
    spans: InMemorySpanExporter,
) -> None:
    consumer, db, _ = hop
    poison = FakeRecord("orders", 0, 0, b"junk", [("traceparent", FOREIGN.encode())])
    consumer.process_batch([poison])
    (span,) = spans.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    with db.read() as session:
        (row,) = session.exec(select(OutboxRecord)).all()
    assert row.topic == "orders.dlt"
    assert dict(decode_headers(row.headers))["traceparent"] == FOREIGN.encode()


def test_log_lines_inside_a_span_carry_its_ids(spans: InMemorySpanExporter) -> None:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter("order"))
    handler.addFilter(TraceIds())
    log = logging.getLogger("test-tracing")
    log.addHandler(handler)
    log.propagate = False
    try:
        with (
            tracing.EventSpans() as events,
            events.handling(record([("traceparent", FOREIGN.encode())])),
        ):
            log.warning("inside")
        log.warning("outside")
    finally:
        log.removeHandler(handler)
    inside, outside = (json.loads(line) for line in out.getvalue().splitlines())
    assert inside["trace_id"] == FOREIGN_TRACE and len(inside["span_id"]) == 16
    assert "trace_id" not in outside


def test_tracing_off_costs_no_header_and_no_span() -> None:
    assert not tracing.enabled()
    assert tracing.current_headers() == ()
    assert tracing.log_ids() == {}
    with (
        tracing.EventSpans() as events,
        events.handling(record([("traceparent", FOREIGN.encode())])),
    ):
        assert not trace.get_current_span().get_span_context().is_valid
    assert events.spans == []


def test_configure_reads_the_standard_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_TRACES_EXPORTER", raising=False)
    assert tracing.configure("order") is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    assert tracing.configure("order") is None
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "jaeger-thrift")
    with pytest.raises(tracing.TracingConfigError, match="use otlp, console or none"):
        tracing.configure("order")
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "otlp")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
    with pytest.raises(tracing.TracingConfigError, match="grpc .* or http/protobuf"):
        tracing.configure("order")
    assert not tracing.enabled()


@pytest.mark.parametrize(
    ("protocol", "exporter"),
    [
        ("grpc", "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"),
        ("http/protobuf", "opentelemetry.exporter.otlp.proto.http.trace_exporter"),
    ],
)
def test_otlp_goes_over_the_protocol_asked_for(
    monkeypatch: pytest.MonkeyPatch, protocol: str, exporter: str
) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
    made = tracing._exporter("otlp")
    assert type(made).__module__ == exporter
    made.shutdown()


def test_otel_propagators_choose_the_headers(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The global propagator, which OTEL_PROPAGATORS configures, reads and writes the
    headers: with `baggage` alone, a `traceparent` is neither followed nor written."""
    default = propagate.get_global_textmap()
    monkeypatch.setenv("OTEL_PROPAGATORS", "baggage")
    propagate.set_global_textmap(propagate._load_propagators())
    try:
        span = consumer_span([("traceparent", FOREIGN.encode())], spans)
        assert span.parent is None and span.links == ()
        with tracing.EventSpans() as events, events.handling(record([])):
            assert [name for name, _ in tracing.current_headers()] == []
    finally:
        propagate.set_global_textmap(default)
    with tracing.EventSpans() as events, events.handling(record([])):
        assert [name for name, _ in tracing.current_headers()] == ["traceparent"]


def test_the_relay_records_a_publish_span_per_traced_row(spans: InMemorySpanExporter) -> None:
    tracing.record_publish(
        [
            ("payments", "e-1", [("traceparent", FOREIGN.encode())], None),
            ("payments", "e-2", [("traceparent", FOREIGN.encode())], "Broker: Message too large"),
            ("orders.dlt", "e-3", [], None),  # created outside any trace: no lone trace
        ],
        started_ns=1,
    )
    ok, failed = spans.get_finished_spans()
    assert ok.name == "send payments" and ok.kind == trace.SpanKind.PRODUCER
    assert ok.attributes is not None
    assert ok.attributes["messaging.operation.name"] == "send"
    assert ok.attributes["messaging.operation.type"] == "send"
    assert ok.parent is not None and format(ok.parent.span_id, "016x") == FOREIGN_SPAN
    assert ok.start_time == 1
    assert failed.status.status_code == StatusCode.ERROR


def test_a_group_commit_appears_in_each_writers_trace(
    tmp_path: Path, spans: InMemorySpanExporter
) -> None:
    def write_group(session: Any, requests: Sequence[str]) -> list[str | Exception]:
        return [ValueError("refused") if r == "bad" else r.upper() for r in requests]

    committer: GroupCommitter[str, str] = GroupCommitter(
        Database(f"sqlite:///{tmp_path}/group.db"), write_group
    )
    tracer = tracing.tracer()
    assert tracer is not None
    with tracer.start_as_current_span("call") as call:
        good = committer.submit_future("ok")
        bad = committer.submit_future("bad")
    untraced = committer.submit_future("quiet")  # outside any span: no span of its own
    committer.start()
    try:
        assert good.result(10) == "OK" and untraced.result(10) == "QUIET"
        with pytest.raises(ValueError):
            bad.result(10)
    finally:
        committer.stop()
    writes = [s for s in spans.get_finished_spans() if s.name == "group commit"]
    assert len(writes) == 2
    assert {s.parent.span_id for s in writes if s.parent} == {call.get_span_context().span_id}
    assert sorted(s.status.status_code.name for s in writes) == ["ERROR", "UNSET"]
