"""A service's security, read once from the environment: auth, TLS and the start-up policy.

Secure by default off loopback: a service bound to an address other than loopback refuses to
start without both TLS and authentication, unless PAYSAGA_INSECURE=1 says it is meant; on
loopback it starts, with a one-line warning naming what is off.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import grpc
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.security.auth_settings import AuthSettings
from services.common.security.interceptor import authenticator
from services.common.security.tls import TlsSettings, is_loopback, server_credentials

log = logging.getLogger(__name__)


class PolicySettings(BaseSettings):
    """PAYSAGA_INSECURE and PAYSAGA_GRPC_REFLECTION."""

    model_config = SettingsConfigDict(env_prefix="PAYSAGA_", extra="ignore")

    #: Start off loopback without TLS or auth anyway (a private network you trust).
    insecure: bool = False
    #: Serve gRPC reflection (grpcurl needs no proto files); off: not served at all.
    grpc_reflection: bool = True


class InsecureStart(RuntimeError):
    """A start that would expose the service unprotected; the message says what to set."""


@dataclass
class Security:
    """What a gRPC server needs to be protected as configured."""

    auth: AuthSettings = field(default_factory=AuthSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)

    def check_address(self, address: str) -> None:
        """Refuse (InsecureStart) or warn about serving `address` without TLS and auth."""
        missing = [
            name
            for name, on in (("TLS", self.tls.enabled), ("authentication", self.auth.enabled))
            if not on
        ]
        if not missing:
            return
        what = " and ".join(missing)
        if is_loopback(address):
            log.warning(
                f"serving on loopback {address} without {what}: fine on a laptop, never beyond it"
            )
            return
        if self.policy.insecure:
            log.warning(f"serving {address} without {what} because PAYSAGA_INSECURE=1")
            return
        raise InsecureStart(
            f"refusing to serve {address} without {what}: anyone who reaches it could move "
            "money. Set PAYSAGA_TLS_CERT_FILE/PAYSAGA_TLS_KEY_FILE and PAYSAGA_AUTH_ENABLED=1 "
            "with a key (see docs/security.md), bind to 127.0.0.1, or set PAYSAGA_INSECURE=1 "
            "if this network is trusted"
        )

    def interceptors(self) -> list[grpc.aio.ServerInterceptor]:
        return [authenticator(self.auth)]

    def credentials(self) -> grpc.ServerCredentials | None:
        return server_credentials(self.tls)

    @property
    def reflection(self) -> bool:
        return self.policy.grpc_reflection
