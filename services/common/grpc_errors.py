"""gRPC errors: `abort` for the ones a caller must fix, and a guard for the unexpected ones.

An unexpected exception in a servicer ends the call with INTERNAL and a generic message;
the details (which may hold SQL or data) go to the log, never to the client.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

import grpc

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error: the server logged the details; retry later"


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the RPC with `code` and a message that says what to fix."""
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


def _aborted(context: grpc.ServicerContext) -> bool:
    """True if the servicer already ended the call with a status of its own."""
    return context.code() not in (None, grpc.StatusCode.OK)  # type: ignore[attr-defined]


def _guard_unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except Exception:
            if _aborted(context):
                raise
            log.exception("unexpected error in a call", extra={"method": method})
            abort(context, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

    return guarded


def _guard_stream(behavior: Callable[..., Iterator[Any]], method: str) -> Callable[..., Any]:
    def guarded(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        try:
            yield from behavior(request, context)
        except Exception:
            if _aborted(context):
                raise
            log.exception("unexpected error in a stream", extra={"method": method})
            abort(context, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

    return guarded


class UnexpectedErrors(grpc.ServerInterceptor):
    """Turns unexpected exceptions of unary and server-streaming calls into INTERNAL."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(handler_call_details)
        method = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None:
            return None
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_guard_unary(handler.unary_unary, method))  # type: ignore[attr-defined,no-any-return]
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_guard_stream(handler.unary_stream, method))  # type: ignore[attr-defined,no-any-return]
        return handler
