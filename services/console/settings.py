"""The console's own settings (PAYSAGA_CONSOLE_*); where the services are comes from the
`paysaga` command's PAYSAGA_ORDER_ADDRESSES / PAYSAGA_PAYMENT_ADDRESSES, and TLS and auth
from the services' PAYSAGA_TLS_* and PAYSAGA_AUTH_* settings."""

from __future__ import annotations

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_ADDRESS = "127.0.0.1:8088"


class ConsoleSettings(BaseSettings):
    """PAYSAGA_CONSOLE_* settings."""

    model_config = SettingsConfigDict(env_prefix="PAYSAGA_CONSOLE_", extra="ignore")

    #: Where the console serves HTTP(S): loopback by default; anywhere else needs TLS and
    #: auth (or PAYSAGA_INSECURE=1), as the services do.
    address: str = DEFAULT_ADDRESS
    #: Seconds one call to a service may take before the page says it does not answer.
    call_timeout_s: float = 3.0
    #: Seconds between two looks at every replica's status (replicas page, flow's lanes).
    status_poll_s: float = 2.0
    #: /stuck lists orders not terminal after this many seconds, unless the page asks.
    stuck_after_s: float = 30.0
    #: A link to a trace by id, `{trace_id}` standing for it (e.g. a Jaeger UI's
    #: `http://127.0.0.1:16686/trace/{trace_id}`); empty: trace ids are shown, not linked.
    trace_url: str = ""

    def host_port(self) -> tuple[str, int]:
        """The address as (host, port): `127.0.0.1:8088`, `[::1]:8088`."""
        host, sep, port = self.address.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
            raise ValueError(
                f"PAYSAGA_CONSOLE_ADDRESS={self.address!r} is not HOST:PORT "
                f"(e.g. {DEFAULT_ADDRESS})"
            )
        return host.strip("[]") or "127.0.0.1", int(port)

    def trace_link(self, trace_id: str) -> str:
        """Where trace `trace_id` can be seen, or empty when no UI is configured."""
        return self.trace_url.replace("{trace_id}", trace_id) if self.trace_url and trace_id else ""
