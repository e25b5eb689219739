"""The keys that verify and sign bearer tokens, and the algorithms each kind of key takes.

The algorithm follows the key, never the token: an HMAC secret takes HS256; an RSA key
RS256/RS384/RS512 and PS256/PS384/PS512; an EC key the one ES* algorithm of its curve
(P-256 ES256, P-384 ES384, P-521 ES512); an Ed25519 or Ed448 key EdDSA. A token that names
another algorithm is refused before its signature is looked at, so a key is never used with
an algorithm of another kind (`alg: none`, HS256 with a public key as its secret).
`KeyConfigError` says why a configured key cannot be used.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa

#: What an HMAC secret (PAYSAGA_AUTH_HS256_SECRET*) verifies.
HMAC_ALGORITHMS = ("HS256",)
RSA_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512")
#: The one algorithm of each elliptic curve (by its cryptography name).
EC_ALGORITHMS = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
EDDSA_ALGORITHMS = ("EdDSA",)

#: A key PyJWT can use: an HMAC secret or a cryptography key object.
Key = Any


class KeyConfigError(ValueError):
    """The auth settings name no usable key, or a key that cannot be read."""


def algorithms_for(key: Key) -> tuple[str, ...]:
    """The algorithms `key` verifies (or signs) tokens with; KeyConfigError if none."""
    if isinstance(key, str | bytes):
        return HMAC_ALGORITHMS
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        return RSA_ALGORITHMS
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        algorithm = EC_ALGORITHMS.get(key.curve.name)
        if algorithm is None:
            raise KeyConfigError(
                f"EC keys on curve {key.curve.name} are not supported: use P-256, P-384 or P-521"
            )
        return (algorithm,)
    eddsa = (
        ed25519.Ed25519PublicKey,
        ed25519.Ed25519PrivateKey,
        ed448.Ed448PublicKey,
        ed448.Ed448PrivateKey,
    )
    if isinstance(key, eddsa):
        return EDDSA_ALGORITHMS
    raise KeyConfigError(
        f"a {type(key).__name__} cannot verify tokens: use an RSA, EC (P-256, P-384, P-521) "
        "or Ed25519 key"
    )


def load_public_key(path: str) -> tuple[Key, tuple[str, ...]]:
    """The PEM public key (or certificate) in `path`, and the algorithms it verifies."""
    pem = Path(path).read_bytes()
    key: Any
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        try:
            key = x509.load_pem_x509_certificate(pem).public_key()
        except ValueError:
            raise KeyConfigError(
                f"{path} holds no PEM public key or certificate (PAYSAGA_AUTH_PUBLIC_KEY_FILE)"
            ) from None
    return key, algorithms_for(key)


def load_jwks(path: str) -> dict[str | None, tuple[Key, tuple[str, ...]]]:
    """The public keys of the JWKS file `path` by key id, with the algorithms each verifies
    (only the one its `alg` names, if it names one)."""
    try:
        entries = json.loads(Path(path).read_text())["keys"]
        parsed = [(entry, jwt.PyJWK(entry)) for entry in entries]
    except (ValueError, KeyError, TypeError, jwt.PyJWTError) as exc:
        raise KeyConfigError(f"{path} is not a usable JWKS file: {exc}") from None
    keys: dict[str | None, tuple[Key, tuple[str, ...]]] = {}
    for entry, jwk in parsed:
        if isinstance(jwk.key, str | bytes):
            raise KeyConfigError(
                f"JWKS key {jwk.key_id!r} is a shared secret: a JWKS file holds public keys only"
            )
        algorithms = algorithms_for(jwk.key)
        named = entry.get("alg")
        if named is not None:
            if named not in algorithms:
                raise KeyConfigError(
                    f"JWKS key {jwk.key_id!r} names alg {named!r}, which its key cannot verify "
                    f"(a key of this kind takes {', '.join(algorithms)})"
                )
            algorithms = (named,)
        keys[jwk.key_id] = (jwk.key, algorithms)
    return keys


def load_signing_key(path: str) -> tuple[Key, str]:
    """The PEM private key in `path` (the token command), and the algorithm it signs with."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise KeyConfigError(
            f"{path} holds no unencrypted PEM private key (PAYSAGA_AUTH_PRIVATE_KEY_FILE): {exc}"
        ) from None
    return key, algorithms_for(key)[0]
