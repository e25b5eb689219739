"""The /metrics HTTP endpoint of a service process: its address, and the server thread.

Switching it off (address 0) switches recording off too (`metrics.set_recording`), so
`make bench` can compare the cost with metrics on and off.
"""

from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from services.common.observability import metrics


class MetricsAddressInUse(RuntimeError):
    """The metrics address could not be bound."""


def parse_address(address: str) -> tuple[str, int] | None:
    """`host:port` -> (host, port); "", "0", "off" -> None (metrics switched off)."""
    address = address.strip()
    if address in ("", "0", "off"):
        return None
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"metrics address {address!r} is not host:port (or 0 to switch off)")
    return host or "0.0.0.0", int(port)


class MetricsServer:
    """The /metrics HTTP endpoint on its own daemon thread."""

    def __init__(self, server: WSGIServer, thread: threading.Thread) -> None:
        self._server = server
        self._thread = thread

    @property
    def address(self) -> str:
        host, port = self._server.server_address[:2]
        return f"{host!s}:{port}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5.0)


def serve(address: str, setting: str = "METRICS_ADDRESS") -> MetricsServer | None:
    """Serve every metric on http://`address`/metrics; None if `address` switches it off
    (and then nothing is recorded either). Call it before building the service.

    `setting` names the variable in the error, so a taken port says what to change.
    """
    where = parse_address(address)
    metrics.set_recording(where is not None)
    if where is None:
        return None
    host, port = where
    try:
        server, thread = start_http_server(port, addr=host)
    except OSError as exc:
        raise MetricsAddressInUse(
            f"cannot serve metrics on {address}: {exc}; set {setting} to a free host:port, "
            "or to 0 to switch metrics off"
        ) from exc
    return MetricsServer(server, thread)
