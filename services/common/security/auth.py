"""Who is calling: bearer tokens (JWT) verified on every gRPC call, and development tokens.

A caller sends `authorization: Bearer <JWT>`. The token is verified with PyJWT against the
configured key (an HS256 shared secret for development; an RS256/ES256 public key or a JWKS
file otherwise): signature, `exp`, `nbf`, `iss` and `aud`. Its subject is the user id; the
operator scope (`scope` claim, space-separated) lets a caller act on every user's data.

`Authenticate` is the server interceptor: a call without valid credentials ends with
UNAUTHENTICATED and a message that says what is wrong; a verified caller is available to the
servicer through `current_caller()` (see services.common.security.authz). With auth off (local
development) every call runs as `LOCAL_CALLER`, who may do everything.

`python -m services.common.security.auth token --user N [--operator] [--ttl 1h]` mints a development
token (`token_command`, for the paysaga CLI too).
"""

from __future__ import annotations

import argparse
import contextvars
import inspect
import json
import re
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import jwt
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.serving.grpc_errors import abort, abort_async

#: Services only operators may call, always (PAYSAGA_AUTH_OPERATOR_SERVICES adds more).
ADMIN_SERVICES = "paysaga.admin.*"

#: Algorithms accepted per kind of key. `none` is never accepted, nor HS* with a public key.
HMAC_ALGORITHMS = ("HS256",)
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")
DEFAULT_OPERATOR_SCOPE = "paysaga:operator"
#: Reflection and health: the methods a setting may leave open to callers without a token.
HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = (
    "/grpc.reflection.v1alpha.ServerReflection/",
    "/grpc.reflection.v1.ServerReflection/",
)


class AuthSettings(BaseSettings):
    """PAYSAGA_AUTH_* settings, shared by both services (and the token command)."""

    model_config = SettingsConfigDict(env_prefix="PAYSAGA_AUTH_", extra="ignore")

    #: Verify a bearer token on every call. Off: every caller may do everything (loopback
    #: development only: a service off loopback refuses to start without it).
    enabled: bool = False
    #: HS256 shared secret (development), inline or in a file.
    hs256_secret: str = ""
    hs256_secret_file: str = ""
    #: A PEM public key (RS256 or ES256), or a JWKS file (keys chosen by the token's `kid`).
    public_key_file: str = ""
    jwks_file: str = ""
    #: Who must have issued the token (`iss`) and for whom (`aud`).
    issuer: str = "paysaga-dev"
    audience: str = "paysaga"
    #: Clock skew allowed on exp/nbf, in seconds.
    leeway_s: float = 30.0
    #: The scope that lets a caller act on every user's data, and the admin API.
    operator_scope: str = DEFAULT_OPERATOR_SCOPE
    #: Whole gRPC services only an operator may call (comma-separated; `*` ends a prefix).
    operator_services: str = ADMIN_SERVICES
    #: Leave grpc.health.v1.Health / reflection open to callers without a token.
    public_health: bool = True
    public_reflection: bool = False
    #: The key that signs development tokens (token command): the HS256 secret by default,
    #: or an RS256/ES256 private key in PEM.
    private_key_file: str = ""

    def secret(self) -> str:
        if self.hs256_secret:
            return self.hs256_secret
        if self.hs256_secret_file:
            return Path(self.hs256_secret_file).read_text().strip()
        return ""


@dataclass(frozen=True)
class Caller:
    """The verified caller: a user (`user_id`) and/or an operator."""

    subject: str
    user_id: int | None
    operator: bool

    def describe(self) -> str:
        role = "operator " if self.operator else ""
        return f"{role}{self.subject}"


#: The caller when authentication is off: local development, every right.
LOCAL_CALLER = Caller(subject="local caller (auth off)", user_id=None, operator=True)

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def current_caller() -> Caller | None:
    """The caller of the call being served; None outside an authenticated call."""
    return _caller.get()


class InvalidCredentials(Exception):
    """Missing or bad credentials; the message says what is wrong (for UNAUTHENTICATED)."""


class KeyConfigError(ValueError):
    """The auth settings name no usable key, or a key that cannot be read."""


#: Verified tokens remembered (a few MB at most): each costs a signature check only once.
VERIFIED_CACHE_SIZE = 10_000


@dataclass(frozen=True)
class _Verified:
    caller: Caller
    not_before: float
    expires: float


class TokenVerifier:
    """Verifies bearer tokens against the configured key(s)."""

    def __init__(self, settings: AuthSettings) -> None:
        self.settings = settings
        #: Tokens verified already (touched on the server's event loop only).
        self._verified: OrderedDict[str, _Verified] = OrderedDict()
        self._keys: dict[str | None, tuple[Any, tuple[str, ...]]] = {}
        secret = settings.secret()
        if secret:
            if len(secret) < 32:
                raise KeyConfigError("the HS256 secret must be at least 32 characters long")
            self._keys[None] = (secret, HMAC_ALGORITHMS)
        elif settings.public_key_file:
            pem = Path(settings.public_key_file).read_bytes()
            self._keys[None] = (pem, PUBLIC_KEY_ALGORITHMS)
        elif settings.jwks_file:
            jwks = jwt.PyJWKSet.from_json(Path(settings.jwks_file).read_text())
            for key in jwks.keys:
                algorithm = key.algorithm_name
                if algorithm not in PUBLIC_KEY_ALGORITHMS:
                    raise KeyConfigError(
                        f"JWKS key {key.key_id!r} uses {algorithm}: only "
                        f"{', '.join(PUBLIC_KEY_ALGORITHMS)} public keys are accepted"
                    )
                self._keys[key.key_id] = (key.key, (algorithm,))
        if not self._keys:
            raise KeyConfigError(
                "authentication is on but no key is configured: set PAYSAGA_AUTH_HS256_SECRET_FILE "
                "(development), PAYSAGA_AUTH_PUBLIC_KEY_FILE or PAYSAGA_AUTH_JWKS_FILE"
            )

    def _key_for(self, header: dict[str, Any]) -> tuple[Any, tuple[str, ...]]:
        if None in self._keys:
            return self._keys[None]
        kid = header.get("kid")
        if kid in self._keys:
            return self._keys[kid]
        raise InvalidCredentials(f"the token's key id (kid) {kid!r} is not one of the known keys")

    def verify(self, token: str) -> Caller:
        """The caller a token names; InvalidCredentials says what is wrong with it.

        A client sends one token on many calls: a token verified before is only checked
        against the clock again (its key, issuer and audience cannot have changed).
        """
        now = time.time()
        hit = self._verified.get(token)
        leeway = self.settings.leeway_s
        if hit is not None and hit.not_before - leeway <= now < hit.expires + leeway:
            return hit.caller
        caller, claims = self._verify(token)
        self._verified[token] = _Verified(caller, float(claims.get("nbf", 0)), float(claims["exp"]))
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)  # the oldest
        return caller

    def _verify(self, token: str) -> tuple[Caller, dict[str, Any]]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError as exc:
            raise InvalidCredentials(f"the token is malformed (not a JWT): {exc}") from None
        key, algorithms = self._key_for(header)
        algorithm = header.get("alg")
        if algorithm not in algorithms:
            raise InvalidCredentials(
                f"the token is signed with algorithm {algorithm!r}, which is not accepted "
                f"here (accepted: {', '.join(algorithms)})"
            )
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidCredentials("the token has expired: get a new one") from None
        except jwt.ImmatureSignatureError:
            raise InvalidCredentials(
                "the token is not valid yet (its nbf is in the future)"
            ) from None
        except jwt.InvalidAudienceError:
            raise InvalidCredentials(
                f"the token is for another audience: its aud must be {self.settings.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise InvalidCredentials(
                f"the token is from another issuer: its iss must be {self.settings.issuer!r}"
            ) from None
        except jwt.InvalidSignatureError:
            raise InvalidCredentials(
                "the token's signature does not verify: it was signed with another key"
            ) from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidCredentials(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidCredentials(f"the token is invalid: {exc}") from None
        return self._caller(claims), claims

    def _caller(self, claims: dict[str, Any]) -> Caller:
        subject = str(claims["sub"])
        scopes = str(claims.get("scope", "")).split()
        operator = self.settings.operator_scope in scopes
        user_id = int(subject) if re.fullmatch(r"[1-9][0-9]{0,18}", subject) else None
        if user_id is None and not operator:
            raise InvalidCredentials(
                f"the token's subject {subject!r} is not a user id (a positive integer)"
            )
        return Caller(subject=subject, user_id=user_id, operator=operator)


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    """The token of the `authorization: Bearer <token>` header; InvalidCredentials if none."""
    values = [value for key, value in metadata or () if key == "authorization"]
    if not values:
        raise InvalidCredentials(
            "no credentials: send the header `authorization: Bearer <token>` "
            "(a development token: `make token USER=<id>`)"
        )
    value = values[0].decode() if isinstance(values[0], bytes) else values[0]
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise InvalidCredentials("the authorization header must be `Bearer <token>`")
    return token.strip()


def _service_patterns(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _matches(method: str, pattern: str) -> bool:
    """`/paysaga.admin.v1.Admin/Do` against `paysaga.admin.*` or `paysaga.admin.v1.Admin`."""
    service = method.lstrip("/").split("/", 1)[0]
    if pattern.endswith("*"):
        return service.startswith(pattern[:-1])
    return service == pattern


class _Deny(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _denied(code: grpc.StatusCode, message: str) -> Callable[..., Awaitable[None]]:
    async def deny(_request: Any, context: grpc.aio.ServicerContext) -> None:
        await abort_async(context, code, message)

    return deny


def _as_caller(behavior: Callable[..., Any], caller: Caller) -> Callable[..., Any]:
    """Run a servicer method as `caller`; a PermissionDenied it raises -> PERMISSION_DENIED."""
    from services.common.security.authz import PermissionDenied

    if inspect.iscoroutinefunction(behavior):

        async def run_async(request: Any, context: Any) -> Any:
            token = _caller.set(caller)
            try:
                return await behavior(request, context)
            except PermissionDenied as exc:
                await abort_async(context, grpc.StatusCode.PERMISSION_DENIED, str(exc))
            finally:
                _caller.reset(token)

        return run_async
    if inspect.isasyncgenfunction(behavior) or inspect.isgeneratorfunction(behavior):
        return behavior  # health and reflection streams: they never ask who calls

    def run(request: Any, context: Any) -> Any:
        token = _caller.set(caller)
        try:
            return behavior(request, context)
        except PermissionDenied as exc:
            abort(context, grpc.StatusCode.PERMISSION_DENIED, str(exc))
        finally:
            _caller.reset(token)

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
            raise _Deny(grpc.StatusCode.UNAUTHENTICATED, str(exc)) from None
        if not caller.operator and any(_matches(method, p) for p in self.operator_services):
            raise _Deny(
                grpc.StatusCode.PERMISSION_DENIED,
                f"{method.lstrip('/').split('/')[0]} needs the operator scope",
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
        try:
            caller = self.authenticate(method, handler_call_details.invocation_metadata)  # type: ignore[attr-defined]
        except _Deny as deny:
            behavior = _denied(deny.code, deny.message)
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


# -- development tokens ------------------------------------------------------------------


def parse_ttl(text: str) -> int:
    """`90s`, `15m`, `1h`, `7d` or a number of seconds -> seconds."""
    found = re.fullmatch(r"\s*([0-9]+)\s*([smhd]?)\s*", text)
    if not found or int(found.group(1)) <= 0:
        raise ValueError(f"--ttl {text!r}: give a duration such as 90s, 15m, 1h or 7d")
    return int(found.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[found.group(2)]


def mint_token(
    settings: AuthSettings,
    *,
    subject: str,
    operator: bool = False,
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    """A token for `subject` signed with the settings' HS256 secret or private key."""
    issued = int(time.time() if now is None else now)
    claims: dict[str, Any] = {
        "sub": subject,
        "iss": settings.issuer,
        "aud": settings.audience,
        "iat": issued,
        "nbf": issued,
        "exp": issued + ttl_s,
    }
    if operator:
        claims["scope"] = settings.operator_scope
    if settings.private_key_file:
        pem = Path(settings.private_key_file).read_bytes()
        algorithm = "ES256" if b"EC PRIVATE" in pem or _is_ec(pem) else "RS256"
        return jwt.encode(claims, pem, algorithm=algorithm)
    secret = settings.secret()
    if not secret:
        raise KeyConfigError(
            "no signing key: set PAYSAGA_AUTH_HS256_SECRET_FILE (e.g. "
            "var/secrets/jwt-hs256.secret, made by `make secrets`) or PAYSAGA_AUTH_PRIVATE_KEY_FILE"
        )
    return jwt.encode(claims, secret, algorithm="HS256")


def _is_ec(pem: bytes) -> bool:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    return isinstance(load_pem_private_key(pem, password=None), ec.EllipticCurvePrivateKey)


def token_command(
    argv: list[str] | None = None, prog: str = "python -m services.common.security.auth"
) -> int:
    """`token --user N [--operator] [--ttl 1h]`: print a development token; the exit status.

    For the paysaga command too: `paysaga token ...` is `token_command(argv, prog="paysaga")`.
    """
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Mint a development bearer token (keys from PAYSAGA_AUTH_* settings).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    token = sub.add_parser("token", help="print a token for a user (and/or an operator)")
    token.add_argument("--user", help="the user id the token acts for (its subject)")
    token.add_argument("--operator", action="store_true", help="add the operator scope")
    token.add_argument("--ttl", default="1h", help="lifetime: 90s, 15m, 1h, 7d (default 1h)")
    token.add_argument("--json", action="store_true", help="print the claims too, as JSON")
    args = parser.parse_args(argv)
    user = (args.user or "").strip()
    if user and not re.fullmatch(r"[1-9][0-9]*", user):
        parser.error(f"--user {user!r}: give a user id, a positive integer")
    if not user and not args.operator:
        parser.error("give --user N (and/or --operator)")
    try:
        ttl_s = parse_ttl(args.ttl)
        settings = AuthSettings()
        text = mint_token(settings, subject=user or "operator", operator=args.operator, ttl_s=ttl_s)
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    if args.json:
        unverified = jwt.decode(text, options={"verify_signature": False})
        sys.stdout.write(json.dumps({"token": text, **unverified}) + "\n")
    else:
        sys.stdout.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(token_command())
