"""Observability: Prometheus metrics, OpenTelemetry traces, JSON logs, gRPC server telemetry,
event-loop stall reports.

Owns the metric names of the shared mechanisms (a contract: docs/observability.md), the
endpoint that serves every metric of a process, and the trace context carried in Kafka
headers; the services define their own domain metrics (orders, payments) next to their
code. May import the leaves of services.common only: every layer above calls into it,
so it calls into none of them.
"""
