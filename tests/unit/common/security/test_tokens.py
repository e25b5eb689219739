"""Bearer token checks: each way a token can be wrong is refused with a message saying how."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from services.common.security.auth_settings import AuthSettings
from services.common.security.tokens import (
    NOT_SIGNED_BY_A_TRUSTED_KEY,
    InvalidCredentials,
    KeyConfigError,
    TokenVerifier,
    bearer_token,
    mint_token,
)

pytestmark = pytest.mark.unit

SECRET = "s" * 40


def settings(**overrides: object) -> AuthSettings:
    return AuthSettings(enabled=True, hs256_secret=SECRET, **overrides)  # type: ignore[arg-type]


def claims(**overrides: object) -> dict[str, object]:
    now = int(time.time())
    base: dict[str, object] = {
        "sub": "2",
        "iss": "paysaga-dev",
        "aud": "paysaga",
        "iat": now,
        "nbf": now,
        "exp": now + 600,
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def refused(verifier: TokenVerifier, token: str) -> str:
    with pytest.raises(InvalidCredentials) as err:
        verifier.verify(token)
    return str(err.value)


def test_a_good_token_names_its_user() -> None:
    caller = TokenVerifier(settings()).verify(jwt.encode(claims(), SECRET, algorithm="HS256"))
    assert (caller.user_id, caller.operator) == (2, False)


def test_the_operator_scope_is_read() -> None:
    token = jwt.encode(claims(scope="read paysaga:operator"), SECRET, algorithm="HS256")
    caller = TokenVerifier(settings()).verify(token)
    assert caller.operator and caller.user_id == 2


def test_expired() -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 120), SECRET, algorithm="HS256")
    assert "expired" in refused(TokenVerifier(settings()), token)


def test_expired_within_the_leeway_is_accepted() -> None:
    token = jwt.encode(claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256")
    assert TokenVerifier(settings()).verify(token).user_id == 2


def test_not_yet_valid() -> None:
    token = jwt.encode(claims(nbf=int(time.time()) + 600), SECRET, algorithm="HS256")
    assert "not valid yet" in refused(TokenVerifier(settings()), token)


def test_wrong_issuer() -> None:
    token = jwt.encode(claims(iss="someone-else"), SECRET, algorithm="HS256")
    assert "issuer" in refused(TokenVerifier(settings()), token)


def test_wrong_audience() -> None:
    token = jwt.encode(claims(aud="another-service"), SECRET, algorithm="HS256")
    assert "audience" in refused(TokenVerifier(settings()), token)


def test_wrong_key() -> None:
    token = jwt.encode(claims(), "x" * 40, algorithm="HS256")
    assert "signature does not verify" in refused(TokenVerifier(settings()), token)


def test_alg_none_is_refused() -> None:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")

    token = f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(claims())}."
    assert "'none'" in refused(TokenVerifier(settings()), token)


@pytest.mark.parametrize("token", ["", "garbage", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.e30"])
def test_malformed(token: str) -> None:
    assert "malformed" in refused(TokenVerifier(settings()), token) or "invalid" in refused(
        TokenVerifier(settings()), token
    )


@pytest.mark.parametrize("missing", ["exp", "sub", "aud", "iss"])
def test_a_required_claim_missing(missing: str) -> None:
    token = jwt.encode(claims(**{missing: None}), SECRET, algorithm="HS256")
    message = refused(TokenVerifier(settings()), token)
    assert missing in message


def test_a_subject_that_is_not_a_user_needs_the_operator_scope() -> None:
    token = jwt.encode(claims(sub="alice"), SECRET, algorithm="HS256")
    assert "not a user id" in refused(TokenVerifier(settings()), token)


def _pem_pair(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> tuple[bytes, bytes]:
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private, public


@pytest.mark.parametrize("algorithm", ["RS256", "ES256"])
def test_public_key(tmp_path: Path, algorithm: str) -> None:
    key = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if algorithm == "RS256"
        else ec.generate_private_key(ec.SECP256R1())
    )
    private, public = _pem_pair(key)
    (tmp_path / "key.pub").write_bytes(public)
    (tmp_path / "key.pem").write_bytes(private)
    verifier = TokenVerifier(AuthSettings(enabled=True, public_key_file=str(tmp_path / "key.pub")))
    minted = mint_token(AuthSettings(private_key_file=str(tmp_path / "key.pem")), subject="3")
    assert jwt.get_unverified_header(minted)["alg"] == algorithm
    assert verifier.verify(minted).user_id == 3
    # Another key pair of the same kind: refused.
    other, _ = _pem_pair(ec.generate_private_key(ec.SECP256R1()))
    if algorithm == "ES256":
        assert "signature" in refused(verifier, jwt.encode(claims(), other, algorithm="ES256"))
    # The public key used as an HMAC secret (algorithm confusion): refused.
    forged = jwt.encode(claims(), SECRET, algorithm="HS256")
    assert refused(verifier, forged) == NOT_SIGNED_BY_A_TRUSTED_KEY


def test_jwks_file_picks_the_key_by_kid(tmp_path: Path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    private, _ = _pem_pair(key)
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="k1", alg="ES256", use="sig")
    (tmp_path / "jwks.json").write_text(json.dumps({"keys": [jwk]}))
    verifier = TokenVerifier(AuthSettings(enabled=True, jwks_file=str(tmp_path / "jwks.json")))
    good = jwt.encode(claims(), private, algorithm="ES256", headers={"kid": "k1"})
    assert verifier.verify(good).user_id == 2
    unknown = jwt.encode(claims(), private, algorithm="ES256", headers={"kid": "k2"})
    assert "'k2'" in refused(verifier, unknown)


def test_no_key_configured_is_a_clear_error() -> None:
    with pytest.raises(KeyConfigError, match="no key is configured"):
        TokenVerifier(AuthSettings(enabled=True))


def test_a_short_secret_is_refused() -> None:
    with pytest.raises(KeyConfigError, match="at least 32"):
        TokenVerifier(AuthSettings(enabled=True, hs256_secret="short"))


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ((), "no credentials"),
        ((("authorization", "Basic abc"),), "Bearer <token>"),
        ((("authorization", "Bearer "),), "Bearer <token>"),
    ],
)
def test_bearer_header(metadata: tuple[tuple[str, str], ...], message: str) -> None:
    with pytest.raises(InvalidCredentials, match=message):
        bearer_token(metadata)
    assert bearer_token((("authorization", "Bearer abc"),)) == "abc"


def test_a_token_verified_before_still_expires() -> None:
    verifier = TokenVerifier(settings(leeway_s=0))
    expires = int(time.time()) + 2
    token = jwt.encode(claims(exp=expires), SECRET, algorithm="HS256")
    assert verifier.verify(token).user_id == 2
    assert verifier.verify(token).user_id == 2  # remembered
    time.sleep(max(0.0, expires - time.time()) + 0.1)
    assert "expired" in refused(verifier, token)
