"""Bearer tokens (JWT): verifying the one a call brings, and issuing development ones.

A caller sends `authorization: Bearer <JWT>`. `TokenVerifier` checks it with PyJWT against the
configured key (an HS256 shared secret for development; an RS256/ES256 public key or a JWKS
file otherwise): signature, `exp`, `nbf`, `iss` and `aud`. Its subject is the user id; the
operator scope (`scope` claim, space-separated) lets a caller act on every user's data.
What is wrong with a token is said by `InvalidCredentials`, a key that cannot be used by
`KeyConfigError`. `mint_token` signs a token with the settings' development key.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt

from services.common.security.auth_settings import AuthSettings
from services.common.security.identity import Caller

#: Algorithms accepted per kind of key. `none` is never accepted, nor HS* with a public key.
HMAC_ALGORITHMS = ("HS256",)
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")


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
