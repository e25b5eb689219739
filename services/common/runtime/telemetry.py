"""Turns a service process's observability on: traces (OTEL_*) and the metrics endpoint.

    telemetry = Telemetry.start("order", settings)   # before the service is built
    app = build(settings)
    telemetry.watch(app)                              # the backlog of its outbox
    ...
    telemetry.stop()                                  # flushes the last spans

Both are started before the service is built: the Kafka consumers it builds report
their lag only when metrics are on, and spans need the tracer.
"""

from __future__ import annotations

import logging

from opentelemetry.sdk.trace import TracerProvider

from services.common.messaging.relay import OutboxRelay
from services.common.observability import metrics, metrics_endpoint, tracing
from services.common.serving.grpc_app import GrpcApp
from services.common.settings import ServiceSettings

log = logging.getLogger(__name__)


class Telemetry:
    def __init__(
        self, provider: TracerProvider | None, server: metrics_endpoint.MetricsServer | None
    ) -> None:
        self.provider = provider
        self.server = server

    @classmethod
    def start(cls, name: str, settings: ServiceSettings) -> Telemetry:
        """Raises MetricsAddressInUse or TracingConfigError with what to change."""
        provider = tracing.configure(name)
        try:
            server = metrics_endpoint.serve(
                settings.metrics_address, f"{name.upper()}_METRICS_ADDRESS"
            )
        except Exception:
            if provider is not None:
                provider.shutdown()
            raise
        if server is not None:
            metrics.announce_build(name)
            log.info("metrics served", extra={"address": f"http://{server.address}/metrics"})
        return cls(provider, server)

    def watch(self, app: GrpcApp) -> None:
        """Report the backlog of the app's outbox (read when Prometheus scrapes)."""
        if self.server is None:
            return
        for worker in app.workers:
            if isinstance(worker, OutboxRelay):
                metrics.watch_outbox(worker.backlog)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.provider is not None:
            self.provider.shutdown()
