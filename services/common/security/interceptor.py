"""The server interceptor that authenticates every gRPC call and runs it as its caller.

`Authenticate` takes the call's bearer token to services.common.security.tokens: a call
without valid credentials, whatever is wrong with them, ends with UNAUTHENTICATED and a
message that says what is wrong (and nothing of the server's keys);
a verified caller runs the servicer method as `current_caller()`
(services.common.security.identity), and a `PermissionDenied` it raises
(services.common.security.authz) ends the call with PERMISSION_DENIED. Operator-only services
need the operator scope. With auth off every call runs as `LOCAL_CALLER`.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from services.common.memo import DerivedPerKey
from services.common.security.auth_settings import ADMIN_SERVICES, AuthSettings
from services.common.security.authz import PermissionDenied
from services.common.security.identity import LOCAL_CALLER, Caller, acting_as
from services.common.security.tokens import (
    UNVERIFIABLE,
    InvalidCredentials,
    TokenVerifier,
    bearer_token,
)
from services.common.serving.grpc_errors import abort, abort_async

log = logging.getLogger(__name__)

#: Reflection and health: the methods a setting may leave open to callers without a token.
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


def _service_patterns(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _matches(method: str, pattern: str) -> bool:
    """`/paysaga.admin.v1.Admin/Do` against `paysaga.admin.*` or `paysaga.admin.v1.Admin`."""
    service = method.lstrip("/").split("/", 1)[0]
    if pattern.endswith("*"):
        return service.startswith(pattern[:-1])
    return service == pattern


class _Deny(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, reason: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason


def _denied(code: grpc.StatusCode, message: str, reason: str) -> Callable[..., Awaitable[None]]:
    async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await abort_async(context, code, message, reason)

    return deny


def _as_caller(behavior: Callable[..., Any], caller: Caller) -> Callable[..., Any]:
    """Run a servicer method as `caller`; a PermissionDenied it raises -> PERMISSION_DENIED."""
    if inspect.iscoroutinefunction(behavior):

        async def run_async(request: Any, context: Any) -> Any:
            with acting_as(caller):
                try:
                    return await behavior(request, context)
                except PermissionDenied as exc:
                    await abort_async(
                        context, grpc.StatusCode.PERMISSION_DENIED, str(exc), exc.reason
                    )

        return run_async
    if inspect.isasyncgenfunction(behavior) or inspect.isgeneratorfunction(behavior):
        return behavior  # health and reflection streams: they never ask who calls

    def run(request: Any, context: Any) -> Any:
        with acting_as(caller):
            try:
                return behavior(request, context)
            except PermissionDenied as exc:
                abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc), exc.reason)

    return run


class Authenticate(grpc.aio.ServerInterceptor):
    """Verifies every call's bearer token (unless `verifier` is None: auth off) and runs the
    servicer as the verified caller; operator-only services need the operator scope."""

    def __init__(self, verifier: TokenVerifier | None, settings: AuthSettings) -> None:
        self.verifier = verifier
        self.public: tuple[str, ...] = (
            *((HEALTH_PREFIX,) if settings.public_health else ()),
            *(REFLECTION_PREFIXES if settings.public_reflection else ()),
        )
        self._as_local_caller: DerivedPerKey[grpc.RpcMethodHandler, grpc.RpcMethodHandler] = (
            DerivedPerKey(
                lambda _method, handler: _replace_behavior(
                    handler, lambda b: _as_caller(b, LOCAL_CALLER)
                )
            )
        )
        # The admin API is operator-only whatever the setting says (it can only add).
        self.operator_services = tuple(
            dict.fromkeys(
                [*_service_patterns(ADMIN_SERVICES), *_service_patterns(settings.operator_services)]
            )
        )

    def authenticate(self, method: str, metadata: Any) -> Caller:
        """The caller of `method`, or _Deny with the status to end the call with."""
        if self.verifier is None:
            return LOCAL_CALLER
        try:
            caller = self.verifier.verify(bearer_token(metadata))
        except InvalidCredentials as exc:
            raise _Deny(grpc.StatusCode.UNAUTHENTICATED, str(exc), "UNAUTHENTICATED") from None
        except Exception:  # never UNKNOWN, nor a library's text, for a token
            log.exception("verifying a token failed unexpectedly")
            raise _Deny(grpc.StatusCode.UNAUTHENTICATED, UNVERIFIABLE, "UNAUTHENTICATED") from None
        if not caller.operator and any(_matches(method, p) for p in self.operator_services):
            raise _Deny(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method.lstrip('/').split('/')[0]} needs the operator scope",
                "INSUFFICIENT_SCOPE",
            )
        return caller

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method  # type: ignore[attr-defined]
        if handler is None or method.startswith(self.public):
            return handler
        if self.verifier is None:  # auth off: every call of a method is wrapped alike
            return self._as_local_caller.get(method, handler)
        try:
            caller = self.authenticate(method, handler_call_details.invocation_metadata)  # type: ignore[attr-defined]
        except _Deny as deny:
            behavior = _denied(deny.code, deny.message, deny.reason)
            return _replace_behavior(handler, lambda _: behavior)
        return _replace_behavior(handler, lambda b: _as_caller(b, caller))


def _replace_behavior(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Callable[..., Any]], Callable[..., Any]]
) -> grpc.RpcMethodHandler:
    for kind in ("unary_unary", "unary_stream", "stream_unary", "stream_stream"):
        behavior = getattr(handler, kind)
        if behavior is not None:
            return handler._replace(**{kind: wrap(behavior)})  # type: ignore[attr-defined,no-any-return]
    return handler


def authenticator(settings: AuthSettings | None = None) -> Authenticate:
    """The interceptor the settings ask for (auth on: KeyConfigError if no key is usable)."""
    settings = settings or AuthSettings()
    verifier = TokenVerifier(settings) if settings.enabled else None
    return Authenticate(verifier, settings)
