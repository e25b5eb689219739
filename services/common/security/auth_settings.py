"""The PAYSAGA_AUTH_* settings: whether calls need a token, and where the keys are.

Shared by both services, the token verifier, the interceptor and the development-token
command. The keys themselves are read by services.common.security.tokens.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Services only operators may call, always (PAYSAGA_AUTH_OPERATOR_SERVICES adds more).
ADMIN_SERVICES = "paysaga.admin.*"
DEFAULT_OPERATOR_SCOPE = "paysaga:operator"


class AuthSettings(BaseSettings):
    """PAYSAGA_AUTH_* settings, shared by both services (and the token command)."""

    model_config = SettingsConfigDict(env_prefix="PAYSAGA_AUTH_", extra="ignore")

    #: Verify a bearer token on every call. Off: every caller may do everything (loopback
    #: development only: a service off loopback refuses to start without it).
    enabled: bool = False
    #: HS256 shared secret (development), inline or in a file.
    hs256_secret: str = ""
    hs256_secret_file: str = ""
    #: A PEM public key or certificate (RSA, EC or Ed25519: the algorithms follow the key's
    #: kind), or a JWKS file (keys chosen by the token's `kid`).
    public_key_file: str = ""
    jwks_file: str = ""
    #: Who must have issued the token (`iss`) and for whom (`aud`).
    issuer: str = "paysaga-dev"
    audience: str = "paysaga"
    #: Clock skew allowed on exp/nbf/iat, in seconds.
    leeway_s: float = 30.0
    #: The longest lifetime a token may have (exp - iat, or exp - now without iat), in
    #: seconds: a longer-lived one is refused, so a leaked token is not good for years.
    max_token_lifetime_s: float = Field(default=86_400.0, gt=0)
    #: The scope that lets a caller act on every user's data, and the admin API.
    operator_scope: str = DEFAULT_OPERATOR_SCOPE
    #: Whole gRPC services only an operator may call (comma-separated; `*` ends a prefix).
    operator_services: str = ADMIN_SERVICES
    #: Leave grpc.health.v1.Health / reflection open to callers without a token.
    public_health: bool = True
    public_reflection: bool = False
    #: The key that signs development tokens (token command): the HS256 secret by default,
    #: or a private key in PEM (RSA: RS256, EC: the ES* of its curve, Ed25519: EdDSA).
    private_key_file: str = ""

    def secret(self) -> str:
        if self.hs256_secret:
            return self.hs256_secret
        if self.hs256_secret_file:
            return Path(self.hs256_secret_file).read_text().strip()
        return ""
