"""gRPC errors: `abort` for the ones a caller must fix, and a guard for the unexpected ones.

An unexpected exception in a servicer ends the call with INTERNAL and a generic message;
the details (which may hold SQL or data) go to the log, never to the client. A message that
repeats what the caller sent repeats it through `echo`: quoted and cut to a short prefix.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc

log = logging.getLogger(__name__)

INTERNAL_MESSAGE = "internal error: the server logged the details; retry later"

#: Most characters of a caller's input that an error message repeats.
ECHO_LIMIT = 64


def echo(value: str, limit: int = ECHO_LIMIT) -> str:
    """`value`, sent by a caller, as an error message repeats it: quoted (control characters
    escaped), and cut to its first `limit` characters with its length when longer."""
    if len(value) <= limit:
        return repr(value)
    return f"{value[:limit]!r}…({len(value)} characters)"


def abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    """End the RPC with `code` and a message that says what to fix (plain servicer methods)."""
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


async def abort_async(
    context: grpc.aio.ServicerContext, code: grpc.StatusCode, message: str
) -> NoReturn:
    """End the RPC with `code` and a message that says what to fix (coroutine methods)."""
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


def _aborted(context: Any, exc: BaseException) -> bool:
    """True if the servicer already ended the call with a status of its own."""
    if isinstance(exc, grpc.aio.AbortError):
        return True
    code = getattr(context, "code", None)  # a plain method's context has none
    return code is not None and code() not in (None, grpc.StatusCode.OK, 0)


def _log_unexpected(method: str) -> None:
    log.exception("unexpected error in a call", extra={"method": method})


def _guard_unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def guarded(request: Any, context: Any) -> Any:
        try:
            return behavior(request, context)
        except Exception as exc:
            if _aborted(context, exc):
                raise
            _log_unexpected(method)
            abort(context, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

    return guarded


def _guard_async(behavior: Callable[..., Awaitable[Any]], method: str) -> Callable[..., Any]:
    """Unary or streaming (through context.write) coroutine methods."""

    async def guarded(request: Any, context: Any) -> Any:
        try:
            return await behavior(request, context)
        except Exception as exc:
            if _aborted(context, exc):
                raise
            if context.cancelled():
                # The client went away (cancelled, disconnected) while we wrote to it.
                log.debug("call ended by its client", extra={"method": method})
                return None
            _log_unexpected(method)
            await abort_async(context, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)

    return guarded


def _guard(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(behavior):
        return _guard_async(behavior, method)
    if inspect.isasyncgenfunction(behavior) or inspect.isgeneratorfunction(behavior):
        return behavior  # no servicer of ours streams with yield; health and reflection do
    return _guard_unary(behavior, method)


class UnexpectedErrors(grpc.aio.ServerInterceptor):
    """Turns unexpected exceptions of unary and server-streaming calls into INTERNAL."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None:
            return handler
        if handler.unary_unary is not None:
            return handler._replace(unary_unary=_guard(handler.unary_unary, method))  # type: ignore[attr-defined,no-any-return]
        if handler.unary_stream is not None:
            return handler._replace(unary_stream=_guard(handler.unary_stream, method))  # type: ignore[attr-defined,no-any-return]
        return handler
