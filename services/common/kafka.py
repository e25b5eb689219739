"""Kafka client settings in one place: idempotent producers, manual-commit consumers."""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient


def producer_config(bootstrap_servers: str, client_id: str) -> dict[str, Any]:
    """An idempotent producer: acks=all, no duplicates or reordering on internal retries."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "client.id": client_id,
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 2,
        "batch.num.messages": 10000,
        "delivery.timeout.ms": 30000,
    }


def consumer_config(
    bootstrap_servers: str, group_id: str, client_id: str, instance_id: str = ""
) -> dict[str, Any]:
    """A consumer whose offsets move only when we commit them, after the database commit.

    Rebalances are incremental (cooperative-sticky): when a replica joins or leaves, only
    the partitions that move stop, the others go on. With `instance_id` (one per replica,
    e.g. "order-1") the member is static: a replica restarted under the same identity
    within the session timeout gets its partitions back without a rebalance.
    """
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "group.id": group_id,
        "client.id": client_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 50,
        # A crashed member's partitions move on after 10 s. (6 s, the broker's minimum, is
        # exceeded by a static member on a busy 2-core host while the coordinator moves,
        # and the member is then fenced.) A restarted static member needs no timeout.
        "session.timeout.ms": 10000,
        "heartbeat.interval.ms": 1000,
        "partition.assignment.strategy": "cooperative-sticky",
    }
    if instance_id:
        config["group.instance.id"] = instance_id
    return config


def new_producer(bootstrap_servers: str, client_id: str) -> Producer:
    return Producer(producer_config(bootstrap_servers, client_id))


class KafkaProbe:
    """Does a broker answer a metadata request? (One client, reused.)"""

    def __init__(self, bootstrap_servers: str, timeout_s: float = 3.0) -> None:
        self.admin = AdminClient({"bootstrap.servers": bootstrap_servers})
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
