"""Public-key mode: each kind of key takes the algorithms of its kind, and a token signed for
another kind of key is refused with an answer that says nothing of the server's key."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from services.common.security.auth_settings import AuthSettings
from services.common.security.keys import KeyConfigError, algorithms_for
from services.common.security.tokens import (
    NOT_SIGNED_BY_A_TRUSTED_KEY,
    InvalidCredentials,
    TokenVerifier,
    mint_token,
)

pytestmark = pytest.mark.unit

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey

#: Each kind of key, and the algorithms a token signed with it may name.
KINDS: dict[str, tuple[Callable[[], PrivateKey], tuple[str, ...]]] = {
    "rsa": (
        lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    ),
    "p256": (lambda: ec.generate_private_key(ec.SECP256R1()), ("ES256",)),
    "p384": (lambda: ec.generate_private_key(ec.SECP384R1()), ("ES384",)),
    "p521": (lambda: ec.generate_private_key(ec.SECP521R1()), ("ES512",)),
    "ed25519": (ed25519.Ed25519PrivateKey.generate, ("EdDSA",)),
}
_made: dict[str, PrivateKey] = {}


def key_of(kind: str) -> PrivateKey:
    """One key per kind for the whole module (RSA keys take a while to make)."""
    if kind not in _made:
        _made[kind] = KINDS[kind][0]()
    return _made[kind]


def claims() -> dict[str, Any]:
    now = int(time.time())
    return {"sub": "2", "iss": "paysaga-dev", "aud": "paysaga", "iat": now, "exp": now + 600}


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def verifier_for(tmp_path: Path, kind: str) -> TokenVerifier:
    path = tmp_path / f"{kind}.pub"
    path.write_bytes(public_pem(key_of(kind)))
    return TokenVerifier(AuthSettings(enabled=True, public_key_file=str(path)))


@pytest.mark.parametrize("kind", KINDS)
def test_a_public_key_accepts_every_algorithm_of_its_kind(tmp_path: Path, kind: str) -> None:
    verifier = verifier_for(tmp_path, kind)
    for algorithm in KINDS[kind][1]:
        token = jwt.encode(claims(), key_of(kind), algorithm=algorithm)
        assert verifier.verify(token).user_id == 2, algorithm


@pytest.mark.parametrize("server", KINDS)
def test_a_token_for_another_kind_of_key_is_refused_and_names_no_key(
    tmp_path: Path, server: str
) -> None:
    verifier = verifier_for(tmp_path, server)
    for kind, (_, algorithms) in KINDS.items():
        if kind == server:
            continue
        for algorithm in algorithms:
            token = jwt.encode(claims(), key_of(kind), algorithm=algorithm)
            with pytest.raises(InvalidCredentials) as refused:
                verifier.verify(token)
            # The same answer for every kind: it says nothing of the server's key.
            assert str(refused.value) == NOT_SIGNED_BY_A_TRUSTED_KEY, (kind, algorithm)
    hmac = jwt.encode(claims(), "s" * 40, algorithm="HS256")  # algorithm confusion
    with pytest.raises(InvalidCredentials, match="not signed by a key this service trusts"):
        verifier.verify(hmac)


def test_a_token_signed_by_another_key_of_the_same_kind_gets_the_same_answer(
    tmp_path: Path,
) -> None:
    verifier = verifier_for(tmp_path, "p256")
    stranger = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(InvalidCredentials) as refused:
        verifier.verify(jwt.encode(claims(), stranger, algorithm="ES256"))
    assert str(refused.value) == NOT_SIGNED_BY_A_TRUSTED_KEY


def test_a_certificate_serves_as_the_public_key(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    key = key_of("p256")
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(now)
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())  # type: ignore[arg-type]
    )
    path = tmp_path / "issuer.crt"
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    verifier = TokenVerifier(AuthSettings(enabled=True, public_key_file=str(path)))
    assert verifier.verify(jwt.encode(claims(), key, algorithm="ES256")).user_id == 2


def test_a_file_without_a_public_key_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nothing.pem"
    path.write_text("not a key")
    with pytest.raises(KeyConfigError, match="no PEM public key or certificate"):
        TokenVerifier(AuthSettings(enabled=True, public_key_file=str(path)))


def test_an_unsupported_curve_is_a_clear_error() -> None:
    with pytest.raises(KeyConfigError, match="P-256, P-384 or P-521"):
        algorithms_for(ec.generate_private_key(ec.SECP256K1()).public_key())


@pytest.mark.parametrize(("kind", "algorithm"), [("rsa", "RS256"), ("p384", "ES384")])
def test_the_token_command_signs_with_the_algorithm_of_its_key(
    tmp_path: Path, kind: str, algorithm: str
) -> None:
    key = key_of(kind)
    private = tmp_path / "signing.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    minted = mint_token(AuthSettings(private_key_file=str(private)), subject="3")
    assert jwt.get_unverified_header(minted)["alg"] == algorithm
    assert verifier_for(tmp_path, kind).verify(minted).user_id == 3


def _jwks(tmp_path: Path, **extra: str) -> Path:
    key = key_of("rsa")
    assert isinstance(key, rsa.RSAPrivateKey)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="r1", **extra)
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    return path


def test_a_jwks_key_without_alg_takes_the_algorithms_of_its_kind(tmp_path: Path) -> None:
    verifier = TokenVerifier(AuthSettings(enabled=True, jwks_file=str(_jwks(tmp_path))))
    token = jwt.encode(claims(), key_of("rsa"), algorithm="PS384", headers={"kid": "r1"})
    assert verifier.verify(token).user_id == 2


def test_a_jwks_key_with_alg_takes_that_one_only(tmp_path: Path) -> None:
    path = _jwks(tmp_path, alg="RS256")
    verifier = TokenVerifier(AuthSettings(enabled=True, jwks_file=str(path)))
    assert verifier.verify(
        jwt.encode(claims(), key_of("rsa"), algorithm="RS256", headers={"kid": "r1"})
    )
    other = jwt.encode(claims(), key_of("rsa"), algorithm="RS512", headers={"kid": "r1"})
    with pytest.raises(InvalidCredentials, match="not signed by a key this service trusts"):
        verifier.verify(other)


def test_a_jwks_key_whose_alg_does_not_fit_it_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KeyConfigError, match="not a usable JWKS file"):  # PyJWK's own check
        TokenVerifier(AuthSettings(enabled=True, jwks_file=str(_jwks(tmp_path, alg="ES256"))))
    # A P-256 key named for another curve's algorithm: PyJWK takes it, the verifier does not.
    key = key_of("p256")
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid="e1", alg="ES384")
    path = tmp_path / "curve.json"
    path.write_text(json.dumps({"keys": [jwk]}))
    with pytest.raises(KeyConfigError, match="names alg 'ES384', which its key cannot verify"):
        TokenVerifier(AuthSettings(enabled=True, jwks_file=str(path)))
