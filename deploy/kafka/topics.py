"""The saga's topics on a broker: create them (with their dead-letter topics) and list them."""

from __future__ import annotations

import logging
import time

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from deploy.kafka.install import KafkaRuntimeError
from services.common.topics import TOPICS

log = logging.getLogger(__name__)

#: The saga topics, then one dead-letter topic each (`<topic>.dlt`).
TOPIC_NAMES: list[str] = [*TOPICS, *(topic.dlt for topic in TOPICS.values())]


def list_topics(bootstrap_servers: str) -> dict[str, int]:
    """Topic name -> partition count, Kafka's internal topics left out."""
    metadata = AdminClient({"bootstrap.servers": bootstrap_servers}).list_topics(timeout=10)
    return {
        name: len(topic.partitions)
        for name, topic in sorted(metadata.topics.items())
        if not name.startswith("__")
    }


def create_topics(
    bootstrap_servers: str, partitions: int, names: list[str] | None = None, timeout: float = 30.0
) -> list[str]:
    """Create the topics that are missing, replicated as the cluster allows; return those made."""
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    metadata = admin.list_topics(timeout=10)
    replication = min(3, len(metadata.brokers))
    missing = [name for name in names or TOPIC_NAMES if name not in metadata.topics]
    if not missing:
        return []
    new = [NewTopic(name, partitions, replication) for name in missing]
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # a concurrent creator won
                raise KafkaRuntimeError(f"could not create topic {name}: {exc}") from exc
    _wait_for_leaders(admin, missing, time.monotonic() + timeout)
    log.info(
        "created topics %s (%d partitions, replication %d)",
        ", ".join(missing),
        partitions,
        replication,
    )
    return missing


def _wait_for_leaders(admin: AdminClient, names: list[str], deadline: float) -> None:
    """Wait until every partition has a leader: before that, a first producer sees errors."""
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=5).topics
        if all(
            name in topics
            and topics[name].partitions
            and all(p.leader >= 0 for p in topics[name].partitions.values())
            for name in names
        ):
            return
        time.sleep(0.1)
    raise KafkaRuntimeError(f"topics {', '.join(names)} still have no leader")
