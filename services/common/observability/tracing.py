"""OpenTelemetry traces: one order is one trace, across gRPC and every Kafka hop.

Configured from the standard environment variables (`configure`): OTEL_TRACES_EXPORTER
(`otlp`, `console`, `none`, or a comma-separated list), OTEL_EXPORTER_OTLP_ENDPOINT,
OTEL_EXPORTER_OTLP_PROTOCOL (`grpc`, default, e.g. http://127.0.0.1:4317; or
`http/protobuf`, e.g. http://127.0.0.1:4318), OTEL_SERVICE_NAME (default paysaga-<svc>),
OTEL_TRACES_SAMPLER / OTEL_TRACES_SAMPLER_ARG, OTEL_PROPAGATORS (default
`tracecontext,baggage`: the global propagator injects and extracts every context),
OTEL_SDK_DISABLED. Unset (or `none`), tracing is off: every helper here returns at once
(no span, no header, no context).

Span names and attributes follow OpenTelemetry's messaging conventions: `{operation name}
{destination}`, i.e. `send <topic>` (PRODUCER, operation type send) and `process <topic>`
(CONSUMER, type process), each with `messaging.operation.name` and
`messaging.operation.type`.

How an order's trace is carried:
- the CreateOrder server span (services.common.observability.grpc_telemetry) is current when the
  request is made; its context goes with the request to the group committer, which
  records a `group commit` span (the shared transaction) in each request's trace;
- the relay records a PRODUCER `send` span per published row (`record_publish`), a child
  of the row's stored context, from its produce() to the broker's answer;
- an event written to the outbox takes the context it was created in as a W3C
  `traceparent` (+ `tracestate`) header, stored with the row: the relay publishes it as
  it is, so it survives restarts, redelivery and replays, and a dead letter keeps it;
- each consumed event gets a CONSUMER `process` span, child of its record's `traceparent`
  and linked to that creation context (the conventions' link; a record carrying a
  `ce_traceparent` too is linked to that one), current
  while its handler applies it, so the events it writes carry the child's context and
  every log line written meanwhile carries trace_id and span_id (observability.logs).
  The consumer applies a batch in one transaction: each event's span ends when that
  transaction commits (or fails), so it covers the database work too; one order stays
  one trace however its events were batched.

Why `traceparent` and not `ce_traceparent`: the consumer span must be a *child* of the
producer's span. OpenTelemetry's messaging conventions (and every OTel Kafka
instrumentation: confluent-kafka, kafka-python, the Java agent) carry that parent in the
record's `traceparent` header, while its CloudEvents conventions keep `ce_traceparent`
(the distributed-tracing extension) for the event's creation context, used as a *link*.
Our relay publishes the stored creation context unchanged, so the two would carry the
same value on every record: we write the one that other tools follow. A record that has
only `ce_traceparent` (another CloudEvents producer) is still followed. A missing,
malformed or foreign header never fails an event: it starts a new trace.
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from types import TracebackType
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.context import Context, get_current
from opentelemetry.propagate import get_global_textmap
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.headers import Headers, header_text

log = logging.getLogger(__name__)

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
#: The same context under the CloudEvents distributed-tracing extension's binary-mode names.
_CE_FALLBACK = {TRACEPARENT: "ce_traceparent", TRACESTATE: "ce_tracestate"}

#: OTLP protocols (OTEL_EXPORTER_OTLP_PROTOCOL) and the exporter module of each.
OTLP_PROTOCOLS = {
    "grpc": "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
    "http/protobuf": "opentelemetry.exporter.otlp.proto.http.trace_exporter",
}
#: The CloudEvents distributed-tracing extension (`ce_traceparent`) is W3C Trace Context
#: whatever OTEL_PROPAGATORS says: it is read in that format.
_CLOUDEVENTS_FORMAT = TraceContextTextMapPropagator()
_NULL: AbstractContextManager[None] = nullcontext()

#: The tracer when tracing is on; None when it is off.
_tracer: Tracer | None = None


class TracingConfigError(ValueError):
    """An OTEL_* variable names something we cannot do; the message says what to set."""


def enabled() -> bool:
    return _tracer is not None


def tracer() -> Tracer | None:
    return _tracer


def _exporter(name: str) -> SpanExporter:
    if name == "otlp":
        protocol = (
            os.environ.get(
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", ""),
            ).strip()
            or "grpc"
        )
        if protocol not in OTLP_PROTOCOLS:
            raise TracingConfigError(
                f"OTLP protocol {protocol!r} is not available: set OTEL_EXPORTER_OTLP_PROTOCOL "
                "to grpc (the default, port 4317) or http/protobuf (port 4318)"
            )
        module = importlib.import_module(OTLP_PROTOCOLS[protocol])
        # OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _INSECURE, _TIMEOUT, ...
        exporter: SpanExporter = module.OTLPSpanExporter()
        return exporter
    if name == "console":
        return ConsoleSpanExporter()
    raise TracingConfigError(
        f"OTEL_TRACES_EXPORTER names {name!r}: use otlp, console or none (comma-separated)"
    )


def configure(service: str) -> TracerProvider | None:
    """Turn tracing on as the OTEL_* variables say; the provider (shut it down at exit),
    or None when tracing stays off."""
    global _tracer
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    names = [
        n.strip().lower()
        for n in os.environ.get("OTEL_TRACES_EXPORTER", "none").split(",")
        if n.strip() and n.strip().lower() != "none"
    ]
    if not names:
        return None
    exporters = [_exporter(name) for name in names]
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; the sampler
    # comes from OTEL_TRACES_SAMPLER(_ARG) (default: parent-based, always on).
    provider = TracerProvider(
        resource=Resource.create({} if named else {SERVICE_NAME: f"paysaga-{service}"})
    )
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _tracer = provider.get_tracer("paysaga")
    log.info("tracing on", extra={"exporters": ",".join(names)})
    return provider


def use_tracer(new: Tracer | None) -> None:
    """Set the tracer directly (tests with an in-memory exporter; None turns tracing off)."""
    global _tracer
    _tracer = new


# -- propagation over Kafka headers -------------------------------------------------------


def current_headers() -> tuple[tuple[str, bytes], ...]:
    """The current context as Kafka headers, as the global propagator (OTEL_PROPAGATORS)
    writes it: `traceparent` (+ `tracestate`, `baggage`) by default; () when tracing is
    off or no span is current."""
    if _tracer is None:
        return ()
    carrier: dict[str, str] = {}
    get_global_textmap().inject(carrier)
    return tuple((name, value.encode()) for name, value in carrier.items())


def context_from_headers(headers: Headers | None) -> Context:
    """The context a record's headers carry, read by the global propagator
    (OTEL_PROPAGATORS); an empty context (a new trace) when they carry none, or a
    malformed one."""
    propagator = get_global_textmap()
    fields = propagator.fields
    found: dict[str, str] = {}
    fallback: dict[str, str] = {}
    for name, value in headers or []:
        lowered = name.lower()
        if lowered in fields:
            found[lowered] = header_text(value)
        elif lowered in _CE_FALLBACK.values():
            fallback[lowered.removeprefix("ce_")] = header_text(value)
    try:
        if found.keys() & fields - {"baggage"} or not fallback:
            return propagator.extract(found) if found else Context()
        return _CLOUDEVENTS_FORMAT.extract(fallback)
    except Exception:  # the propagator tolerates junk; be sure a header never fails an event
        log.debug("unusable trace context ignored", exc_info=True)
        return Context()


def creation_link(headers: Headers, context: Context) -> Link | None:
    """The link a process span carries to the event's creation context: the CloudEvents
    `ce_traceparent` when the record has one of its own, else the `context` its
    `traceparent` gave (the producer side); None when neither is valid."""
    carried = trace.get_current_span(context).get_span_context()
    for name, value in headers:
        if name.lower() == _CE_FALLBACK[TRACEPARENT]:
            own = trace.get_current_span(
                _CLOUDEVENTS_FORMAT.extract({TRACEPARENT: header_text(value)})
            ).get_span_context()
            if own.is_valid:
                carried = own
            break
    return Link(carried) if carried.is_valid else None


# -- consumer spans -----------------------------------------------------------------------


class KafkaRecord(Protocol):
    """What a consumer span needs of a confluent_kafka.Message."""

    def topic(self) -> str | None: ...

    def partition(self) -> int | None: ...

    def offset(self) -> int | None: ...

    def headers(self) -> Any: ...


class EventSpans:
    """The CONSUMER spans of the events one transaction applies, ended when it ends.

    `with EventSpans() as spans, db.write_core() as transaction:` then, per event,
    `with spans.handling(record, event_id, order_id):` around its handler. A span is
    current only inside `handling`; all end on leaving the outer block, marked failed if
    the transaction failed (the batch is then retried or narrowed: new spans).
    """

    def __init__(self, group: str = "") -> None:
        self.group = group
        self.spans: list[Span] = []

    def __enter__(self) -> EventSpans:
        return self

    def handling(
        self, record: KafkaRecord, event_id: str = "", order_id: str = ""
    ) -> AbstractContextManager[None]:
        if _tracer is None:
            return _NULL
        return self._handling(_tracer, record, event_id, order_id)

    @contextmanager
    def _handling(
        self, tracer: Tracer, record: KafkaRecord, event_id: str, order_id: str
    ) -> Iterator[None]:
        headers = record.headers() or []
        if isinstance(headers, dict):
            headers = list(headers.items())
        topic = record.topic() or ""
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.name": "process",
            "messaging.operation.type": "process",
            "messaging.destination.name": topic,
            "messaging.destination.partition.id": str(record.partition() or 0),
            "messaging.kafka.offset": record.offset() or 0,
        }
        if self.group:
            attributes["messaging.consumer.group.name"] = self.group
        if event_id:
            attributes["messaging.message.id"] = event_id
        if order_id:
            attributes["paysaga.order_id"] = order_id
        created = context_from_headers(headers)
        creation = creation_link(headers, created)
        span = tracer.start_span(
            f"process {topic}",
            context=created,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=(creation,) if creation is not None else (),
        )
        self.spans.append(span)
        with trace.use_span(span, end_on_exit=False, record_exception=False):
            yield

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for span in self.spans:
            if exc is not None:
                span.set_status(Status(StatusCode.ERROR, f"transaction failed: {exc!r}"[:500]))
            span.end()
        self.spans = []


def record_publish(
    published: Iterable[tuple[str, str, Headers, str | None]], started_ns: int
) -> None:
    """PRODUCER spans of a relay round: per (topic, event id, stored headers, error or
    None) one `send <topic>` span (operation type send), child of the context the event
    was created in, from `started_ns` (the round's first produce) to now (every broker
    answer is in)."""
    if _tracer is None:
        return
    ended_ns = time.time_ns()
    for topic, event_id, headers, error in published:
        parent = context_from_headers(headers)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            continue  # an event created outside any trace: no lone publish trace
        span = _tracer.start_span(
            f"send {topic}",
            context=parent,
            kind=SpanKind.PRODUCER,
            start_time=started_ns,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.name": "send",
                "messaging.operation.type": "send",
                "messaging.destination.name": topic,
                "messaging.message.id": event_id,
            },
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error[:500]))
        span.end(end_time=ended_ns)


def capture() -> Context | None:
    """The current context, to parent work another thread does later (None: tracing off)."""
    return get_current() if _tracer is not None else None


def record_group_write(writes: Iterable[tuple[Context | None, str | None, int]]) -> None:
    """A `group commit` span in each writer's trace: per (captured context, error or None,
    when the group's writer took the write, in time.time_ns()), from then to now
    (committed, or given up)."""
    if _tracer is None:
        return
    writes = list(writes)
    ended_ns = time.time_ns()
    for parent, error, started_ns in writes:
        if parent is None or not trace.get_current_span(parent).get_span_context().is_valid:
            continue
        span = _tracer.start_span(
            "group commit",
            context=parent,
            start_time=started_ns,
            attributes={"paysaga.group_commit.size": len(writes)},
        )
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error[:500]))
        span.end(end_time=ended_ns)


def mark_failed(reason: str) -> None:
    """The current span's event was dead-lettered (or otherwise failed) for `reason`."""
    if _tracer is None:
        return
    span = trace.get_current_span()
    if span.is_recording():
        span.set_status(Status(StatusCode.ERROR, reason[:500]))
        span.add_event("dead-lettered", {"reason": reason[:500]})


def log_ids() -> dict[str, str]:
    """trace_id and span_id of the current span (for log lines), {} when there is none."""
    if _tracer is None:
        return {}
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }
