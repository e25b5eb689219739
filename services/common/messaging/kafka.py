"""Kafka client settings in one place: idempotent producers that all partition by key alike,
consumers whose offsets move only once the application stores them, and the security
settings (TLS, SASL) every client takes from the environment; and reading a topic's high
watermarks as they are now.

`client_overrides()` reads them: the named variables below (KAFKA_SECURITY_PROTOCOL=SASL_SSL,
KAFKA_SASL_MECHANISM=SCRAM-SHA-512, KAFKA_SASL_USERNAME, KAFKA_SASL_PASSWORD or
KAFKA_SASL_PASSWORD_FILE, KAFKA_SSL_CA_LOCATION, ...) and any librdkafka property as
KAFKA_CONFIG_<NAME> (dots as underscores: KAFKA_CONFIG_SASL_OAUTHBEARER_METHOD=oidc). They
never replace the settings the delivery guarantees rest on (idempotence, acks, the
partitioner, offsets stored only by the application).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import Producer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from services.common.observability import metrics

#: Environment variable -> librdkafka property, for the usual security settings.
NAMED_SETTINGS = {
    "KAFKA_SECURITY_PROTOCOL": "security.protocol",
    "KAFKA_SASL_MECHANISM": "sasl.mechanism",
    "KAFKA_SASL_USERNAME": "sasl.username",
    "KAFKA_SASL_PASSWORD": "sasl.password",
    "KAFKA_SSL_CA_LOCATION": "ssl.ca.location",
    "KAFKA_SSL_CERTIFICATE_LOCATION": "ssl.certificate.location",
    "KAFKA_SSL_KEY_LOCATION": "ssl.key.location",
    "KAFKA_SSL_KEY_PASSWORD": "ssl.key.password",
    "KAFKA_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "ssl.endpoint.identification.algorithm",
}
#: How every producer of the project picks a record's partition: CRC32 of the key modulo the
#: partition count (librdkafka's default, pinned so that no override changes it):
#: `partition_for_key` computes the same, e.g. where an outcome keyed by a user will arrive.
PARTITIONER = "consistent_random"
#: KAFKA_CONFIG_<NAME>: any librdkafka property, its dots written as underscores.
GENERIC_PREFIX = "KAFKA_CONFIG_"
#: A file holding the SASL password (instead of KAFKA_SASL_PASSWORD in the environment).
PASSWORD_FILE = "KAFKA_SASL_PASSWORD_FILE"


def client_overrides(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """librdkafka properties from the environment (empty values are ignored)."""
    env = os.environ if environ is None else environ
    found = {prop: env[name] for name, prop in NAMED_SETTINGS.items() if env.get(name)}
    for name, value in env.items():
        if name.startswith(GENERIC_PREFIX) and len(name) > len(GENERIC_PREFIX) and value:
            found[name.removeprefix(GENERIC_PREFIX).lower().replace("_", ".")] = value
    if env.get(PASSWORD_FILE):
        found["sasl.password"] = Path(env[PASSWORD_FILE]).read_text().strip()
    return found


def with_overrides(config: dict[str, Any]) -> dict[str, Any]:
    """`config` plus the environment's security settings; `config`'s own keys win."""
    return {**client_overrides(), **config}


def admin_config(bootstrap_servers: str) -> dict[str, Any]:
    """An admin client (health probes, tools) with the environment's security settings."""
    return with_overrides({"bootstrap.servers": bootstrap_servers})


def producer_config(bootstrap_servers: str, client_id: str) -> dict[str, Any]:
    """An idempotent producer: acks=all, no duplicates or reordering on internal retries."""
    return with_overrides(
        {
            "bootstrap.servers": bootstrap_servers,
            "client.id": client_id,
            "enable.idempotence": True,
            "acks": "all",
            "partitioner": PARTITIONER,
            "linger.ms": 2,
            "batch.num.messages": 10000,
            "delivery.timeout.ms": 30000,
        }
    )


def consumer_config(
    bootstrap_servers: str, group_id: str, client_id: str, instance_id: str = ""
) -> dict[str, Any]:
    """A consumer whose offsets move only once we store them, after the database commit.

    The application stores each batch's offsets once its transaction has committed
    (`enable.auto.offset.store` off); librdkafka commits what was stored every
    `auto.commit.interval.ms`, when partitions are revoked, and on close. One commit a
    second instead of one per batch spares the broker most of its requests; a crash
    redelivers at most that second of records, which the inbox drops.

    Rebalances are incremental (cooperative-sticky): when a replica joins or leaves, only
    the partitions that move stop, the others go on. With `instance_id` (one per replica,
    e.g. "order-1") the member is static: a replica restarted under the same identity
    within the session timeout gets its partitions back without a rebalance.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": True,
        "auto.commit.interval.ms": 1000,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 500,
        # A crashed member's partitions move on after 10 s. (6 s, the broker's minimum, is
        # exceeded by a static member on a busy 2-core host while the coordinator moves,
        # and the member is then fenced.) A restarted static member needs no timeout.
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": "cooperative-sticky",
        **metrics.consumer_stats_config(),
    }
    if instance_id:
        config["group.instance.id"] = instance_id
    return with_overrides(config)


def new_producer(bootstrap_servers: str, client_id: str) -> Producer:
    return Producer(producer_config(bootstrap_servers, client_id))


def partition_for_key(key: bytes, partition_count: int) -> int:
    """The partition the project's producers (PARTITIONER) give a record with this non-empty
    key, on a topic of `partition_count` partitions."""
    return zlib.crc32(key) % partition_count


class HighWatermarks:
    """Reads a topic's high watermarks as they are now, over a connection of its own.

    (A consumer's own connection serves such a request only after its pending fetch,
    which waits up to fetch.wait.max.ms for records.) The admin client is made on the
    first call: a process that never asks opens nothing.
    """

    def __init__(self, bootstrap_servers: str, timeout_s: float = 5.0) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.timeout_s = timeout_s
        self._admin: AdminClient | None = None

    def __call__(self, topic: str) -> dict[int, int]:
        """Partition -> high watermark, for every partition of `topic`; raises if Kafka
        cannot say (the topic is missing, no broker answers in time)."""
        if self._admin is None:
            self._admin = AdminClient(admin_config(self.bootstrap_servers))
        metadata = self._admin.list_topics(topic, timeout=self.timeout_s).topics.get(topic)
        if metadata is None or metadata.error is not None or not metadata.partitions:
            raise LookupError(f"topic {topic!r} has no partitions: {metadata and metadata.error}")
        latest = OffsetSpec.latest()
        futures = self._admin.list_offsets(
            {TopicPartition(topic, p): latest for p in metadata.partitions},
            request_timeout=self.timeout_s,
        )
        return {tp.partition: future.result().offset for tp, future in futures.items()}


class KafkaProbe:
    """Does a broker answer a metadata request? (One client, reused.)"""

    def __init__(self, bootstrap_servers: str, timeout_s: float = 3.0) -> None:
        self.admin = AdminClient(admin_config(bootstrap_servers))
        self.timeout_s = timeout_s

    def __call__(self) -> None:
        """Raise if no broker answers within the timeout."""
        self.admin.list_topics(timeout=self.timeout_s)

    def problem(self) -> str | None:
        """A status check: why Kafka is out of reach, or None."""
        try:
            self()
        except Exception as exc:
            return f"no Kafka broker answers ({exc}): events wait in the outbox and topics"
        return None
