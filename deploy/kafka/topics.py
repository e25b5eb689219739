"""The services' topics on a broker or cluster: create them (replicated, retained), list them."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from deploy.kafka.install import KafkaRuntimeError
from services.common.messaging.kafka import admin_config
from services.saga.topics import KAFKA_TOPICS

log = logging.getLogger(__name__)

#: Every topic the services use: the saga topics, their dead-letter topics, order-updates.
TOPIC_NAMES: list[str] = list(KAFKA_TOPICS)

HOUR_MS = 60 * 60 * 1000
DAY_MS = 24 * HOUR_MS
#: retention.ms set on a topic when it is created: a week unless listed here. order-updates only
#: feeds live WatchOrders streams (a replica tails it from its end), so an hour is plenty.
RETENTION_MS: dict[str, int] = {"order-updates": HOUR_MS}
DEFAULT_RETENTION_MS = 7 * DAY_MS


def segment_ms(name: str) -> int:
    """segment.ms of a topic: Kafka deletes whole segments, so a record may outlive
    retention.ms by up to a segment's age. A day (a quarter of a short retention) bounds a
    saga record's life near 8 days, which the inboxes' 14-day retention covers."""
    return min(DAY_MS, retention_ms(name) // 4)


@dataclass(frozen=True)
class Replication:
    """How many copies of each partition, and how many must confirm an acks=all write."""

    factor: int
    min_insync: int


def replication_for(brokers: int) -> Replication:
    """3 copies and 2 in sync on 3+ brokers (one may fail); never more than the brokers allow."""
    factor = max(1, min(3, brokers))
    return Replication(factor=factor, min_insync=max(1, factor - 1))


def admin_client(bootstrap_servers: str, config: Mapping[str, str] | None = None) -> AdminClient:
    """An admin client that keeps librdkafka's info chatter (e.g. BGQUEUE at exit) off stderr.

    With the environment's security settings (services.common.messaging.kafka), and `config` on top.
    """
    return AdminClient({**admin_config(bootstrap_servers), **(config or {}), "log_level": 4})


def retention_ms(name: str) -> int:
    return RETENTION_MS.get(name, DEFAULT_RETENTION_MS)


def list_topics(bootstrap_servers: str, config: Mapping[str, str] | None = None) -> dict[str, int]:
    """Topic name -> partition count, Kafka's internal topics left out."""
    metadata = admin_client(bootstrap_servers, config).list_topics(timeout=10)
    return {
        name: len(topic.partitions)
        for name, topic in sorted(metadata.topics.items())
        if not name.startswith("__")
    }


@dataclass(frozen=True)
class TopicInfo:
    """What `make kafka-topics` shows of one topic."""

    partitions: int
    replication: int
    min_insync: str  # the topic's min.insync.replicas, as the broker reports it
    under_replicated: int  # partitions whose ISR is smaller than their replica set


def describe_topics(
    bootstrap_servers: str, config: Mapping[str, str] | None = None
) -> dict[str, TopicInfo]:
    """Topic name -> partitions, replication and in-sync state; internal topics left out."""
    admin = admin_client(bootstrap_servers, config)
    topics = {
        name: topic
        for name, topic in sorted(admin.list_topics(timeout=10).topics.items())
        if not name.startswith("__")
    }
    if not topics:
        return {}
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in topics]
    min_isr = {}
    for resource, future in admin.describe_configs(resources, request_timeout=10).items():
        entry = future.result().get("min.insync.replicas")
        min_isr[resource.name] = entry.value if entry is not None else "?"
    return {
        name: TopicInfo(
            partitions=len(topic.partitions),
            replication=max((len(p.replicas) for p in topic.partitions.values()), default=0),
            min_insync=min_isr[name],
            under_replicated=sum(len(p.isrs) < len(p.replicas) for p in topic.partitions.values()),
        )
        for name, topic in topics.items()
    }


def create_topics(
    bootstrap_servers: str,
    partitions: int,
    names: list[str] | None = None,
    timeout: float = 30.0,
    brokers: int | None = None,
    config: Mapping[str, str] | None = None,
) -> list[str]:
    """Create the topics that are missing; return those made.

    Replication follows `replication_for(brokers)`, brokers being the cluster's size (default:
    the brokers that answer now); retention follows RETENTION_MS.
    """
    admin = admin_client(bootstrap_servers, config)
    metadata = admin.list_topics(timeout=10)
    replication = replication_for(brokers if brokers is not None else len(metadata.brokers))
    missing = [name for name in names or TOPIC_NAMES if name not in metadata.topics]
    if not missing:
        return []
    new = [
        NewTopic(
            name,
            partitions,
            replication.factor,
            config={
                "min.insync.replicas": str(replication.min_insync),
                "retention.ms": str(retention_ms(name)),
                "segment.ms": str(segment_ms(name)),
            },
        )
        for name in missing
    ]
    for name, future in admin.create_topics(new, operation_timeout=timeout).items():
        try:
            future.result()
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:  # a concurrent creator won
                raise KafkaRuntimeError(f"could not create topic {name}: {exc}") from exc
    _wait_for_leaders(admin, missing, time.monotonic() + timeout)
    log.info(
        "created topics %s (%d partitions, replication %d, min.insync.replicas %d)",
        ", ".join(missing),
        partitions,
        replication.factor,
        replication.min_insync,
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
