"""Observability: Prometheus metrics, OpenTelemetry traces, JSON logs, gRPC server telemetry.

Owns the metric names (a contract: docs/observability.md) and the trace context carried in
Kafka headers. May import the leaves of services.common only: every layer above calls
into it, so it calls into none of them.
"""
