"""A token's claims as a hostile caller would craft them: lifetimes, times, scopes, and
values no library foresaw. Each is refused as InvalidCredentials (UNAUTHENTICATED) with a
message saying what is wrong, or read as OAuth defines it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import jwt
import pytest

from services.common.security.auth_settings import AuthSettings
from services.common.security.tokens import InvalidCredentials, TokenVerifier, mint_token

pytestmark = pytest.mark.unit

SECRET = "s" * 40
DAY = 86_400


def verifier(**overrides: Any) -> TokenVerifier:
    return TokenVerifier(AuthSettings(enabled=True, hs256_secret=SECRET, **overrides))


def claims(**overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    base: dict[str, Any] = {"sub": "2", "iss": "paysaga-dev", "aud": "paysaga", "iat": now}
    base["exp"] = now + 600
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], header: dict[str, Any] | None = None) -> str:
    """An HS256 token over exactly this JSON (PyJWT's encoder would refuse some of it)."""

    def part(data: dict[str, Any]) -> str:
        raw = json.dumps(data).encode()  # Infinity and NaN pass through, as a forger's would
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    head = part({"alg": "HS256", "typ": "JWT", **(header or {})})
    body = part(payload)
    mac = hmac.new(SECRET.encode(), f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"


def refused(token: str, **overrides: Any) -> str:
    with pytest.raises(InvalidCredentials) as err:
        verifier(**overrides).verify(token)
    return str(err.value)


# -- lifetime ---------------------------------------------------------------------------


def test_a_token_living_longer_than_the_maximum_is_refused() -> None:
    now = int(time.time())
    message = refused(signed(claims(iat=now, exp=now + DAY + 60)))
    assert "lives too long" in message and "exp - iat" in message
    assert "PAYSAGA_AUTH_MAX_TOKEN_LIFETIME_S" in message
    assert verifier().verify(signed(claims(iat=now, exp=now + DAY))).user_id == 2


def test_without_iat_the_lifetime_counts_from_now() -> None:
    now = int(time.time())
    message = refused(signed(claims(iat=None, exp=now + 2 * DAY)))
    assert "lives too long" in message and "exp - now" in message
    assert verifier().verify(signed(claims(iat=None, exp=now + 3600))).user_id == 2


def test_the_maximum_lifetime_is_a_setting() -> None:
    token = signed(claims(exp=int(time.time()) + 600))
    assert "lives too long" in refused(token, max_token_lifetime_s=300)


@pytest.mark.parametrize("exp", [1e300, 10**400, float("inf"), float("nan")])
def test_an_absurd_expiry_is_refused_cleanly(exp: float) -> None:
    message = refused(signed(claims(exp=exp)))
    assert message  # InvalidCredentials with a reason, not an overflow


def test_the_token_command_will_not_mint_a_token_the_services_refuse() -> None:
    with pytest.raises(ValueError, match="PAYSAGA_AUTH_MAX_TOKEN_LIFETIME_S"):
        mint_token(AuthSettings(hs256_secret=SECRET), subject="2", ttl_s=7 * DAY)


# -- times ------------------------------------------------------------------------------


def test_a_future_iat_is_reported_as_such() -> None:
    future = int(time.time()) + 3600
    message = refused(signed(claims(iat=future, exp=future + 600)))
    assert "issued in the future" in message and "nbf" not in message


def test_a_future_iat_and_nbf_are_reported_as_issued_in_the_future() -> None:
    future = int(time.time()) + 3600
    token = mint_token(AuthSettings(hs256_secret=SECRET), subject="2", now=future)
    assert "issued in the future" in refused(token)


def test_a_future_nbf_alone_is_not_valid_yet() -> None:
    now = int(time.time())
    assert "nbf is in the future" in refused(signed(claims(nbf=now + 3600, exp=now + 7200)))


def test_an_iat_within_the_leeway_is_accepted() -> None:
    now = int(time.time())
    assert verifier().verify(signed(claims(iat=now + 5, exp=now + 600))).user_id == 2


@pytest.mark.parametrize("name", ["iat", "nbf", "exp"])
@pytest.mark.parametrize("value", ["1700000000", True, [1], {"t": 1}])
def test_a_time_that_is_not_a_number_is_refused(name: str, value: Any) -> None:
    assert refused(signed(claims(**{name: value})))


# -- scopes -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scope", "operator"),
    [
        ("paysaga:operator", True),
        ("read paysaga:operator write", True),
        ("read  paysaga:operator", True),  # an empty scope between two spaces is no scope
        ("read\tpaysaga:operator", False),  # a tab is not a separator
        ("read\u00a0paysaga:operator", False),  # nor a no-break space
        ("read\npaysaga:operator", False),
        ("paysaga:operator\u2003", False),
    ],
)
def test_scopes_are_separated_by_ascii_spaces_only(scope: str, operator: bool) -> None:
    caller = verifier().verify(signed(claims(scope=scope)))
    assert caller.operator is operator


def test_a_scope_that_is_not_a_string_is_refused() -> None:
    assert "scope claim must be a string" in refused(signed(claims(scope=["paysaga:operator"])))


# -- what a crafted token can hold ------------------------------------------------------


def test_a_huge_subject_is_echoed_as_a_short_prefix() -> None:
    message = refused(signed(claims(sub="x" * 60_000)))
    assert "(60000 characters)" in message and len(message) < 200


def test_a_huge_key_id_is_echoed_as_a_short_prefix(tmp_path: Any) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    jwks = TokenVerifier(AuthSettings(enabled=True, jwks_file=str(tmp_path / "jwks.json")))
    token = jwt.encode(claims(), key, algorithm="ES256", headers={"kid": "k" * 50_000})
    with pytest.raises(InvalidCredentials) as err:
        jwks.verify(token)
    assert "(50000 characters)" in str(err.value) and len(str(err.value)) < 200


@pytest.mark.parametrize(
    "header",
    [
        {"kid": ["a", "b"]},
        {"kid": {"nested": 1}},
        {"alg": ["HS256"]},
        {"alg": None},
        {"alg": "NONE"},
        {"alg": "x" * 10_000},
        {"crit": ["exp"]},
    ],
)
def test_a_crafted_header_is_refused_as_invalid_credentials(header: dict[str, Any]) -> None:
    assert len(refused(signed(claims(), header))) < 200


@pytest.mark.parametrize(
    "payload",
    [
        {"sub": 2, "iss": "paysaga-dev", "aud": "paysaga", "exp": 2_000_000_000},
        {"sub": "2", "iss": ["paysaga-dev"], "aud": "paysaga", "exp": 2_000_000_000},
        {"sub": "2", "iss": "paysaga-dev", "aud": {"a": 1}, "exp": 2_000_000_000},
        {"sub": "2", "iss": "paysaga-dev", "aud": "paysaga", "exp": -1e308},
        {"sub": None, "iss": "paysaga-dev", "aud": "paysaga", "exp": 2_000_000_000},
    ],
)
def test_a_crafted_payload_is_refused_as_invalid_credentials(payload: dict[str, Any]) -> None:
    assert refused(signed(payload))
