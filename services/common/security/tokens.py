"""Bearer tokens (JWT): verifying the one a call brings, and issuing development ones.

A caller sends `authorization: Bearer <JWT>`. `TokenVerifier` checks it with PyJWT against the
configured key (an HS256 shared secret for development; a public key or a JWKS file
otherwise, each taking the algorithms of its kind: services.common.security.keys): signature,
`exp`, `nbf`, `iat`, `iss`, `aud`, and a lifetime no longer than
PAYSAGA_AUTH_MAX_TOKEN_LIFETIME_S. Its subject is the user id; the operator scope (`scope`
claim, separated by ASCII spaces as OAuth defines it) lets a caller act on every user's data.
Every way a token can be wrong is an `InvalidCredentials` whose message speaks of the token,
never of the server's keys; a key that cannot be used is a `KeyConfigError`. `mint_token`
signs a token with the settings' development key.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt

from services.common.security.auth_settings import AuthSettings
from services.common.security.identity import Caller
from services.common.security.keys import (
    HMAC_ALGORITHMS,
    Key,
    KeyConfigError,
    load_jwks,
    load_public_key,
    load_signing_key,
)
from services.common.serving.grpc_errors import echo

log = logging.getLogger(__name__)


class InvalidCredentials(Exception):
    """Missing or bad credentials; the message says what is wrong (for UNAUTHENTICATED)."""


#: Verified tokens remembered (a few MB at most): each costs a signature check only once.
VERIFIED_CACHE_SIZE = 10_000

#: The answer to a token whose algorithm or signature does not match a trusted key: the same
#: whichever it is, so that it says nothing of the keys (their kind, their algorithms).
NOT_SIGNED_BY_A_TRUSTED_KEY = (
    "the token's signature does not verify: it was not signed by a key this service trusts"
)
#: The answer to a token that makes the verification fail in a way not foreseen below.
UNVERIFIABLE = "the token cannot be verified: send a JWT issued for this service"

#: The operator scope's separator (RFC 6749, 3.3: scopes are separated by the space, %x20).
_SCOPE_SEPARATOR = " "


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
        self._keys: dict[str | None, tuple[Key, tuple[str, ...]]] = {}
        secret = settings.secret()
        if secret:
            if len(secret) < 32:
                raise KeyConfigError("the HS256 secret must be at least 32 characters long")
            self._keys[None] = (secret, HMAC_ALGORITHMS)
        elif settings.public_key_file:
            self._keys[None] = load_public_key(settings.public_key_file)
        elif settings.jwks_file:
            self._keys = load_jwks(settings.jwks_file)
        if not self._keys:
            raise KeyConfigError(
                "authentication is on but no key is configured: set PAYSAGA_AUTH_HS256_SECRET_FILE "
                "(development), PAYSAGA_AUTH_PUBLIC_KEY_FILE or PAYSAGA_AUTH_JWKS_FILE"
            )

    def _key_for(self, header: dict[str, Any]) -> tuple[Key, tuple[str, ...]]:
        if None in self._keys:
            return self._keys[None]
        kid = header.get("kid")
        if isinstance(kid, str) and kid in self._keys:
            return self._keys[kid]
        raise InvalidCredentials(
            f"the token's key id (kid) {echo(str(kid))} is not one of the keys this service trusts"
        )

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
        try:
            verified = self._verify(token, now)
        except InvalidCredentials:
            raise
        except Exception as exc:  # whatever else a crafted token makes a library raise
            log.info("token refused", extra={"error": type(exc).__name__})
            raise InvalidCredentials(UNVERIFIABLE) from None
        self._verified[token] = verified
        if len(self._verified) > VERIFIED_CACHE_SIZE:
            self._verified.popitem(last=False)  # the oldest
        return verified.caller

    def _verify(self, token: str, now: float) -> _Verified:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.DecodeError:
            raise InvalidCredentials(
                "the token is malformed: it is not a JWT (header.payload.signature)"
            ) from None
        except jwt.InvalidTokenError as exc:
            raise InvalidCredentials(f"the token's header is invalid: {echo(str(exc))}") from None
        algorithm = header.get("alg")
        if isinstance(algorithm, str) and algorithm.lower() == "none":
            raise InvalidCredentials("the token is not signed (its alg is 'none'): sign it")
        key, algorithms = self._key_for(header)
        if algorithm not in algorithms:
            raise InvalidCredentials(NOT_SIGNED_BY_A_TRUSTED_KEY)
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=list(algorithms),
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_s,
                # iat and nbf are checked below, each with its own answer.
                options={
                    "require": ["exp", "iss", "aud", "sub"],
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.ExpiredSignatureError:
            raise InvalidCredentials("the token has expired: get a new one") from None
        except jwt.InvalidAudienceError:
            raise InvalidCredentials(
                f"the token is for another audience: its aud must be {self.settings.audience!r}"
            ) from None
        except jwt.InvalidIssuerError:
            raise InvalidCredentials(
                f"the token is from another issuer: its iss must be {self.settings.issuer!r}"
            ) from None
        except jwt.InvalidSignatureError:
            raise InvalidCredentials(NOT_SIGNED_BY_A_TRUSTED_KEY) from None
        except jwt.MissingRequiredClaimError as exc:
            raise InvalidCredentials(f"the token has no {exc.claim!r} claim") from None
        except jwt.InvalidTokenError as exc:
            raise InvalidCredentials(f"the token is invalid: {echo(str(exc))}") from None
        not_before, expires = self._check_times(claims, now)
        return _Verified(self._caller(claims), not_before, expires)

    def _check_times(self, claims: dict[str, Any], now: float) -> tuple[float, float]:
        """The token's (not before, expiry) once its times are sound: not issued in the
        future, valid now, and living no longer than the settings allow."""
        leeway = self.settings.leeway_s
        expires = _numeric_date(claims, "exp")
        issued = _numeric_date(claims, "iat")
        not_before = _numeric_date(claims, "nbf")
        assert expires is not None  # a required claim
        if issued is not None and issued > now + leeway:
            raise InvalidCredentials(
                "the token was issued in the future (its iat is ahead of this server's clock "
                "by more than the allowed skew): check the issuer's clock"
            )
        if not_before is not None and not_before > now + leeway:
            raise InvalidCredentials("the token is not valid yet (its nbf is in the future)")
        longest = self.settings.max_token_lifetime_s
        if expires - (now if issued is None else issued) > longest:
            measured = "exp - now" if issued is None else "exp - iat"
            raise InvalidCredentials(
                f"the token lives too long: its lifetime ({measured}) is over the {longest:g} s "
                "this service accepts (PAYSAGA_AUTH_MAX_TOKEN_LIFETIME_S): get a shorter-lived one"
            )
        return (not_before or 0.0), expires

    def _caller(self, claims: dict[str, Any]) -> Caller:
        subject = str(claims["sub"])
        scope = claims.get("scope", "")
        if not isinstance(scope, str):
            raise InvalidCredentials(
                "the token's scope claim must be a string of scopes separated by spaces"
            )
        operator = self.settings.operator_scope in scope.split(_SCOPE_SEPARATOR)
        user_id = int(subject) if re.fullmatch(r"[1-9][0-9]{0,18}", subject) else None
        if user_id is None and not operator:
            raise InvalidCredentials(
                f"the token's subject {echo(subject)} is not a user id (a positive integer)"
            )
        return Caller(subject=subject, user_id=user_id, operator=operator)


def _numeric_date(claims: dict[str, Any], name: str) -> float | None:
    """The claim `name` as seconds since the epoch (None if absent); InvalidCredentials if it
    is not a finite number (RFC 7519's NumericDate)."""
    value = claims.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidCredentials(f"the token's {name} claim must be a number of seconds")
    try:
        seconds = float(value)
    except OverflowError:
        seconds = math.inf
    if not math.isfinite(seconds):
        raise InvalidCredentials(f"the token's {name} claim is not a usable time")
    return seconds


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


def mint_token(
    settings: AuthSettings,
    *,
    subject: str,
    operator: bool = False,
    ttl_s: int = 3600,
    now: float | None = None,
) -> str:
    """A token for `subject` signed with the settings' HS256 secret or private key; a
    ValueError if the services would refuse it for living too long."""
    if ttl_s > settings.max_token_lifetime_s:
        raise ValueError(
            f"a token living {ttl_s} s would be refused: the services accept at most "
            f"{settings.max_token_lifetime_s:g} s (PAYSAGA_AUTH_MAX_TOKEN_LIFETIME_S)"
        )
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
        key, algorithm = load_signing_key(settings.private_key_file)
        return jwt.encode(claims, key, algorithm=algorithm)
    secret = settings.secret()
    if not secret:
        raise KeyConfigError(
            "no signing key: set PAYSAGA_AUTH_HS256_SECRET_FILE (e.g. "
            "var/secrets/jwt-hs256.secret, made by `make secrets`) or PAYSAGA_AUTH_PRIVATE_KEY_FILE"
        )
    return jwt.encode(claims, secret, algorithm="HS256")
