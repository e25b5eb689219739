"""gRPC server telemetry on a real grpc.aio server: codes, latency, spans; sync and async."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import REGISTRY

from services.common.observability import tracing
from services.common.observability.grpc_telemetry import AioServerTelemetry
from services.common.serving.grpc_errors import UnexpectedErrors

pytestmark = pytest.mark.unit

SERVICE = "test.Telemetry"
PARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def sync_ok(request: bytes, context: Any) -> bytes:
    """Answers with the trace id of the span current in the servicer ('' for none)."""
    current = trace.get_current_span().get_span_context()
    return format(current.trace_id, "032x").encode() if current.is_valid else b""


def sync_not_found(request: bytes, context: Any) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("unreachable")


def sync_boom(request: bytes, context: Any) -> bytes:
    raise ValueError("a bug")


def sync_stream(request: bytes, context: Any) -> Iterator[bytes]:
    yield b"a"
    yield b"b"


async def async_ok(request: bytes, context: Any) -> bytes:
    return b"ok"


async def async_invalid(request: bytes, context: Any) -> bytes:
    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "fix it")
    raise AssertionError("unreachable")


async def async_stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
    yield b"x"


SYNC = {
    "SyncOk": grpc.unary_unary_rpc_method_handler(sync_ok),
    "SyncNotFound": grpc.unary_unary_rpc_method_handler(sync_not_found),
    "SyncBoom": grpc.unary_unary_rpc_method_handler(sync_boom),
    "SyncStream": grpc.unary_stream_rpc_method_handler(sync_stream),
}
ASYNC = {
    "AsyncOk": grpc.unary_unary_rpc_method_handler(async_ok),
    "AsyncInvalid": grpc.unary_unary_rpc_method_handler(async_invalid),
    "AsyncStream": grpc.unary_stream_rpc_method_handler(async_stream),
}


def handled(method: str, code: str, kind: str = "unary") -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": kind}
    return (
        REGISTRY.get_sample_value("grpc_server_handled_total", {**labels, "grpc_code": code}) or 0
    )


def handling_count(method: str, kind: str = "unary") -> float:
    labels = {"grpc_service": SERVICE, "grpc_method": method, "grpc_type": kind}
    return REGISTRY.get_sample_value("grpc_server_handling_seconds_count", labels) or 0


EXPECTED = [
    ("SyncOk", "OK", "unary"),
    ("SyncNotFound", "NOT_FOUND", "unary"),
    ("SyncBoom", "INTERNAL", "unary"),  # UnexpectedErrors' status, as the client sees it
    ("SyncStream", "OK", "server_stream"),
]


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use_tracer(provider.get_tracer("test"))
    yield exporter
    tracing.use_tracer(None)
    provider.shutdown()


async def _call_all(port: int, methods: dict[str, Any]) -> dict[str, Any]:
    replies: dict[str, Any] = {}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        for name, handler in methods.items():
            path = f"/{SERVICE}/{name}"
            try:
                if handler.response_streaming:
                    replies[name] = [r async for r in channel.unary_stream(path)(b"")]
                else:
                    metadata = (("traceparent", PARENT),)
                    replies[name] = await channel.unary_unary(path)(b"", metadata=metadata)
            except grpc.aio.AioRpcError as exc:
                replies[name] = exc.code()
    return replies


def test_aio_server_counts_each_method_by_code_sync_and_async(
    spans: InMemorySpanExporter,
) -> None:
    before = {(m, c, k): handled(m, c, k) for m, c, k in EXPECTED}
    before_async = handled("AsyncInvalid", "INVALID_ARGUMENT")

    async def run() -> dict[str, Any]:
        server = grpc.aio.server(
            migration_thread_pool=futures.ThreadPoolExecutor(4),
            interceptors=[AioServerTelemetry()],
        )
        methods = {**SYNC, **ASYNC}
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, methods)])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await _call_all(port, methods)
        finally:
            await server.stop(None)

    replies = asyncio.run(run())
    assert replies["SyncNotFound"] == grpc.StatusCode.NOT_FOUND
    assert replies["AsyncInvalid"] == grpc.StatusCode.INVALID_ARGUMENT
    assert replies["AsyncOk"] == b"ok" and replies["AsyncStream"] == [b"x"]
    assert (
        handled("SyncNotFound", "NOT_FOUND") - before[("SyncNotFound", "NOT_FOUND", "unary")] == 1
    )
    assert handled("SyncOk", "OK") - before[("SyncOk", "OK", "unary")] == 1
    assert handled("SyncBoom", "UNKNOWN") >= 1  # no UnexpectedErrors on this server
    assert handled("AsyncInvalid", "INVALID_ARGUMENT") - before_async == 1
    assert handled("AsyncStream", "OK", "server_stream") >= 1
    # The synchronous method ran inside its server span, child of the caller's context.
    assert replies["SyncOk"] == PARENT.split("-")[1].encode()
    by_name = {s.name: s for s in spans.get_finished_spans()}
    span = by_name[f"{SERVICE}/SyncOk"]
    assert span.kind == trace.SpanKind.SERVER
    assert span.parent is not None and format(span.parent.span_id, "016x") == PARENT.split("-")[2]
    assert span.attributes is not None and span.attributes["rpc.grpc.status_code"] == 0
    not_found = by_name[f"{SERVICE}/SyncNotFound"]
    assert not_found.attributes is not None
    assert not_found.attributes["rpc.grpc.status_code"] == grpc.StatusCode.NOT_FOUND.value[0]


def test_first_in_the_list_it_counts_the_status_the_client_gets() -> None:
    before = {(m, c, k): handled(m, c, k) for m, c, k in EXPECTED}
    count_before = handling_count("SyncOk")

    async def run() -> dict[str, Any]:
        server = grpc.aio.server(
            migration_thread_pool=futures.ThreadPoolExecutor(4),
            interceptors=[AioServerTelemetry(), UnexpectedErrors()],
        )
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, SYNC)])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await _call_all(port, SYNC)
        finally:
            await server.stop(None)

    replies = asyncio.run(run())
    assert replies["SyncBoom"] == grpc.StatusCode.INTERNAL
    assert replies["SyncOk"] == b"", "tracing off: no span"
    for key, value in before.items():
        assert handled(*key) - value == 1, key
    assert handling_count("SyncOk") - count_before == 1
