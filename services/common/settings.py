"""Settings shared by both services, read from the environment with defaults that run locally."""

from __future__ import annotations

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    """What every service needs; each service subclasses it with its own env prefix.

    With prefix ORDER_, `grpc_address` is read from ORDER_GRPC_ADDRESS, and so on.
    The Kafka address is shared by both services: KAFKA_BOOTSTRAP_SERVERS.
    """

    model_config = SettingsConfigDict(populate_by_name=True, extra="ignore")

    grpc_address: str = "127.0.0.1:0"
    #: Which part of the service this process runs: "api" (the public gRPC API), "worker"
    #: (the consumer, the outbox relay, the background workers) or "all" (both). Checked,
    #: and overridden by `serve --role`, in services.common.runtime (roles, entrypoint).
    role: str = "all"
    database_url: str = "sqlite:///var/service.db"
    #: Connections kept open to PostgreSQL per process (as many again may open under load).
    database_pool_size: int = 10
    kafka_bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS", "kafka_bootstrap_servers"),
    )
    #: This replica's stable identity in its consumer group (e.g. "order-1"; set by the
    #: stack launcher). Empty: a dynamic member. Two live replicas must never share one.
    instance_id: str = ""
    log_level: str = "INFO"
    log_format: str = "json"
    #: Threads for the plain (non-coroutine) servicer methods: short database reads.
    grpc_max_workers: int = 16
    #: Seconds between keepalive pings on a connection, and to wait for the answer: a
    #: client that stops answering has its streams ended.
    grpc_keepalive_s: float = 30.0
    grpc_keepalive_timeout_s: float = 10.0
    #: Largest gRPC request accepted, in bytes; larger ones get RESOURCE_EXHAUSTED.
    grpc_max_request_bytes: int = 64 * 1024
    #: Most events consumed and applied in one database transaction.
    consumer_batch_size: int = 500
    #: A record whose handler fails (not a rejected or undecodable event) is tried again
    #: this many times before it is dead-lettered; a transient database error likewise
    #: before the batch is rewound.
    handler_retries: int = 3
    #: The wait before the first such retry, in milliseconds; each later one waits twice as
    #: long (half of it at random).
    handler_retry_backoff_ms: float = 100.0
    #: The most time one consumed batch spends waiting between retries, in seconds.
    handler_retry_max_s: float = 10.0
    #: Most outbox rows published per relay round.
    relay_batch_size: int = 1000
    #: The relay also looks for unpublished rows this often, even if nobody woke it.
    relay_idle_poll_s: float = 1.0
    #: A relay round that follows an answered one starts no sooner than this many
    #: milliseconds after that one began (rows committed meanwhile go out together): more
    #: orders a second on a busy machine, later events at light load (docs/performance.md).
    relay_round_interval_ms: float = Field(default=0.0, ge=0)
    #: Failed attempts (retriable errors) after which the relay parks an outbox row.
    relay_max_attempts: int = 5
    #: An unpublished outbox row older than this marks the outbox unhealthy.
    relay_stale_after_s: float = 60.0
    #: On SIGTERM, seconds between reporting NOT_SERVING and refusing new calls.
    shutdown_drain_s: float = 1.0
    #: Seconds in-flight RPCs get to finish on SIGTERM, and as much again for the workers
    #: (consumer, relay) to stop.
    shutdown_grace_s: float = 10.0
    #: A second, plaintext port answering only grpc.health.v1 (e.g. "0.0.0.0:8081"), for
    #: probes that speak no TLS (Kubernetes' gRPC probes); empty: none.
    health_address: str = ""
    #: Where Prometheus scrapes this process (http://<address>/metrics); "0" or empty
    #: switches metrics off (nothing is recorded then either).
    metrics_address: str = ""
    #: Inbox rows (event ids kept to drop redeliveries) are purged after this many days:
    #: <SVC>_INBOX_RETENTION_DAYS, or INBOX_RETENTION_DAYS for both services. Keep it above
    #: the saga topics' retention (7 days), see services.common.operations.retention.
    inbox_retention_days: float = 14.0
    shared_inbox_retention_days: float | None = Field(
        default=None, validation_alias=AliasChoices("INBOX_RETENTION_DAYS")
    )

    #: Saga journal steps (what `paysaga order timeline` shows) are purged after this many
    #: days: <SVC>_JOURNAL_RETENTION_DAYS. Dead letters are kept until redriven and beyond.
    journal_retention_days: float = 90.0
    #: Most times one record may be redriven (`paysaga dlq redrive`), counting the redrives
    #: of the dead letters it became again: <SVC>_REDRIVE_MAX. More are refused.
    redrive_max: int = Field(default=3, ge=1)

    @property
    def inbox_retention(self) -> float:
        """The inbox retention in days: the service's own setting wins over the shared one."""
        if (
            "inbox_retention_days" in self.model_fields_set
            or self.shared_inbox_retention_days is None
        ):
            return self.inbox_retention_days
        return self.shared_inbox_retention_days
