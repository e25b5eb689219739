"""gRPC server telemetry: per-method metrics and, with tracing on, a SERVER span per call.

`AioServerTelemetry` is the grpc.aio server's interceptor. Put it FIRST in the
interceptor list, so it sees the status the client gets (after UnexpectedErrors turned
an exception into INTERNAL).

Metrics: grpc_server_started_total, grpc_server_handled_total{grpc_code} and
grpc_server_handling_seconds, labelled grpc_service / grpc_method / grpc_type (the
names of go-grpc-prometheus, which existing dashboards use).

Why not opentelemetry-instrumentation-grpc's aio interceptor: it replaces every behavior
with a coroutine that awaits the original, so it cannot wrap the plain synchronous
servicer methods the aio server runs in its migration thread pool (it would call them
on the event loop and await their result). Here a synchronous behavior stays
synchronous (its span is current in the pool thread that runs it, so everything it does
joins the call's trace) and a coroutine stays a coroutine. The span follows the
instrumentation's conventions: named `<service>/<method>`, kind SERVER, rpc.* attributes,
parent from the caller's `traceparent` metadata. Health checks and reflection are
counted but not traced (a load balancer's probes would each make a trace).
"""

from __future__ import annotations

import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Iterator
from typing import Any

import grpc
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import get_global_textmap
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from services.common.memo import DerivedPerKey
from services.common.observability import metrics, tracing

#: Calls of these services are counted but not traced.
UNTRACED = ("grpc.health.v1.Health", "grpc.reflection.")
#: Server-side codes that mark a span as failed (the others are the caller's doing).
_SERVER_ERRORS = {
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS,
}
_CODES_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


class StatusRecorder:
    """The servicer context, remembering the status the servicer sets.

    The aio server hands synchronous methods a context without `code()`; through this
    wrapper, `code()` answers on every server (UnexpectedErrors asks it too).
    """

    def __init__(self, context: Any) -> None:
        self._context = context
        self._code: grpc.StatusCode | None = None

    def abort(self, code: grpc.StatusCode, details: str = "", *args: Any) -> Any:
        self._code = code
        return self._context.abort(code, details, *args)

    def abort_with_status(self, status: Any) -> Any:
        self._code = status.code
        return self._context.abort_with_status(status)

    def set_code(self, code: grpc.StatusCode) -> Any:
        self._code = code
        return self._context.set_code(code)

    def code(self) -> Any:
        if self._code is not None:
            return self._code
        own = getattr(self._context, "code", None)
        return own() if own is not None else None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)


def status_of(context: Any, error: BaseException | None) -> grpc.StatusCode:
    """The status a call ended with: what the servicer set, else OK or (on an error) UNKNOWN."""
    try:
        code = context.code()
    except Exception:
        code = None
    if isinstance(code, int):
        code = _CODES_BY_VALUE.get(code)
    if isinstance(code, grpc.StatusCode):
        return code
    if error is None:
        return grpc.StatusCode.OK
    if type(error).__name__ == "CancelledError":
        return grpc.StatusCode.CANCELLED
    return grpc.StatusCode.UNKNOWN


class _Call:
    """One RPC being measured: started, then `end(context, error)` once."""

    def __init__(self, method: str, kind: str, context: Any) -> None:
        service, _, name = method.lstrip("/").rpartition("/")
        self.labels = (service, name, kind)
        self.started = time.perf_counter()
        self.span: Span | None = None
        if metrics.recording():
            metrics.GRPC_STARTED.labels(*self.labels).inc()
        tracer = tracing.tracer()
        if tracer is not None and not service.startswith(UNTRACED):
            self.span = tracer.start_span(
                f"{service}/{name}",
                context=_remote_context(context.invocation_metadata()),
                kind=SpanKind.SERVER,
                attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
            )

    def end(self, context: Any, error: BaseException | None) -> None:
        code = status_of(context, error)
        if metrics.recording():
            metrics.GRPC_HANDLED.labels(*self.labels, code.name).inc()
            metrics.GRPC_HANDLING.labels(*self.labels).observe(time.perf_counter() - self.started)
        if self.span is not None:
            self.span.set_attribute("rpc.grpc.status_code", code.value[0])
            if code in _SERVER_ERRORS:
                self.span.set_status(Status(StatusCode.ERROR, code.name))
            if error is not None and code is grpc.StatusCode.UNKNOWN:
                self.span.record_exception(error)
            self.span.end()


def _remote_context(metadata: Any) -> Context:
    """The caller's context, read by the global propagator (OTEL_PROPAGATORS)."""
    propagator = get_global_textmap()
    fields = propagator.fields
    carrier = {}
    for key, value in metadata or ():
        if key in fields:
            carrier[key] = value.decode() if isinstance(value, bytes) else str(value)
    return propagator.extract(carrier) if carrier else Context()


def _current(call: _Call) -> Any:
    """The call's span as the current one (a no-op without a span)."""
    if call.span is None:
        return _NoSpan()
    return trace.use_span(call.span, end_on_exit=False, record_exception=False)


class _NoSpan:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def _wrap_behavior(behavior: Callable[..., Any], method: str, kind: str) -> Any:
    """`behavior`, measured; synchronous stays synchronous, a coroutine stays a coroutine."""
    if inspect.iscoroutinefunction(behavior):

        async def unary_async(request: Any, context: Any) -> Any:
            call = _Call(method, kind, context)
            context = StatusRecorder(context)
            error: BaseException | None = None
            try:
                with _current(call):
                    return await behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                call.end(context, error)

        return unary_async

    if inspect.isasyncgenfunction(behavior):

        async def stream_async(request: Any, context: Any) -> AsyncIterator[Any]:
            # The span is not made current across yields (each resumes in another task
            # step); what a stream does between them is not traced.
            call = _Call(method, kind, context)
            context = StatusRecorder(context)
            error: BaseException | None = None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                call.end(context, error)

        return stream_async

    if kind in ("server_stream", "bidi_stream"):

        def stream_sync(request: Any, context: Any) -> Iterator[Any]:
            # As above: a synchronous stream may be resumed on another pool thread.
            call = _Call(method, kind, context)
            context = StatusRecorder(context)
            error: BaseException | None = None
            try:
                yield from behavior(request, context)
            except BaseException as exc:
                error = exc
                raise
            finally:
                call.end(context, error)

        return stream_sync

    def unary_sync(request: Any, context: Any) -> Any:
        call = _Call(method, kind, context)
        context = StatusRecorder(context)
        error: BaseException | None = None
        try:
            with _current(call):
                return behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            call.end(context, error)

    return unary_sync


_KINDS = {
    (False, False): ("unary", "unary_unary"),
    (False, True): ("server_stream", "unary_stream"),
    (True, False): ("client_stream", "stream_unary"),
    (True, True): ("bidi_stream", "stream_stream"),
}


def _measured_handler(method: Hashable, handler: Any) -> Any:
    """`handler` with its behavior measured."""
    kind, field = _KINDS[(bool(handler.request_streaming), bool(handler.response_streaming))]
    behavior = getattr(handler, field)
    if behavior is None:
        return handler
    return handler._replace(**{field: _wrap_behavior(behavior, str(method), kind)})


class AioServerTelemetry(grpc.aio.ServerInterceptor):
    """grpc.aio server interceptor: gRPC metrics and server spans (first in the list).

    Each method's handler is measured once (the caller's metadata is read from the call's
    context when a span needs it), not on every call."""

    def __init__(self) -> None:
        self._measured: DerivedPerKey[Any, Any] = DerivedPerKey(_measured_handler)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method
            return None  # type: ignore[return-value]
        return self._measured.get(handler_call_details.method, handler)  # type: ignore[attr-defined,no-any-return]
