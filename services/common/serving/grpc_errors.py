"""gRPC errors: `abort` for the ones a caller must fix, and a guard for the unexpected ones.

Every error carries, besides its status code and message, a `google.rpc.Status` in the
`grpc-status-details-bin` trailer with one `google.rpc.ErrorInfo` detail (AIP-193): a
stable `reason` a program can branch on (REQUEST_ID_REUSED, PRODUCT_NOT_FOUND, ...; by
default the status code's name) and the domain `paysaga.dev`. Clients that do not read it
(grpcurl) still show the message. `error_info(rpc_error)` reads it back.

An unexpected exception in a servicer ends the call with INTERNAL and a generic message;
the details (which may hold SQL or data) go to the log, never to the client. A message that
repeats what the caller sent repeats it through `echo`: quoted and cut to a short prefix.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Hashable
from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from services.common.memo import DerivedPerKey

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


#: The ErrorInfo domain of every error paysaga raises.
ERROR_DOMAIN = "paysaga.dev"


def error_status(
    code: grpc.StatusCode, message: str, reason: str | None = None
) -> status_pb2.Status:
    """The google.rpc.Status of an error: its code, message and an ErrorInfo with `reason`
    (the code's name when None) in the paysaga.dev domain."""
    detail = any_pb2.Any()
    detail.Pack(error_details_pb2.ErrorInfo(reason=reason or code.name, domain=ERROR_DOMAIN))
    return status_pb2.Status(code=code.value[0], message=message, details=[detail])


def _attach(context: Any, code: grpc.StatusCode, message: str, reason: str | None) -> None:
    """Put the error's google.rpc.Status in the call's trailing metadata (before abort)."""
    set_trailing = getattr(context, "set_trailing_metadata", None)
    if set_trailing is not None:  # a test's stand-in context may have none
        set_trailing(rpc_status.to_status(error_status(code, message, reason)).trailing_metadata)


def abort(
    context: grpc.ServicerContext, code: grpc.StatusCode, message: str, reason: str | None = None
) -> NoReturn:
    """End the RPC with `code`, a message that says what to fix and an ErrorInfo `reason`
    (default: the code's name) (plain servicer methods)."""
    _attach(context, code, message, reason)
    context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


async def abort_async(
    context: grpc.aio.ServicerContext,
    code: grpc.StatusCode,
    message: str,
    reason: str | None = None,
) -> NoReturn:
    """End the RPC with `code`, a message that says what to fix and an ErrorInfo `reason`
    (default: the code's name) (coroutine methods)."""
    _attach(context, code, message, reason)
    await context.abort(code, message)
    raise AssertionError("unreachable: context.abort raises")


def error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ErrorInfo a failed call carries (client side), or None if it carries none."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


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
            abort(context, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, "INTERNAL")

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
            await abort_async(context, grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE, "INTERNAL")

    return guarded


def _guard(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(behavior):
        return _guard_async(behavior, method)
    if inspect.isasyncgenfunction(behavior) or inspect.isgeneratorfunction(behavior):
        return behavior  # no servicer of ours streams with yield; health and reflection do
    return _guard_unary(behavior, method)


def _guarded_handler(method: Hashable, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    if handler.unary_unary is not None:
        return handler._replace(unary_unary=_guard(handler.unary_unary, str(method)))  # type: ignore[attr-defined,no-any-return]
    if handler.unary_stream is not None:
        return handler._replace(unary_stream=_guard(handler.unary_stream, str(method)))  # type: ignore[attr-defined,no-any-return]
    return handler


class UnexpectedErrors(grpc.aio.ServerInterceptor):
    """Turns unexpected exceptions of unary and server-streaming calls into INTERNAL."""

    def __init__(self) -> None:
        self._guarded: DerivedPerKey[grpc.RpcMethodHandler, grpc.RpcMethodHandler] = DerivedPerKey(
            _guarded_handler
        )

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        return self._guarded.get(handler_call_details.method, handler)  # type: ignore[attr-defined]
