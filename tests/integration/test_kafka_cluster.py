"""A 3-node KRaft cluster: replicated topics, acks=all writes, and surviving a killed node."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from confluent_kafka import KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient, ConfigResource

from deploy.kafka.cluster import KafkaCluster, nodes_found
from deploy.kafka.topics import TOPIC_NAMES, retention_ms
from tests.integration.test_kafka_runtime import consume_until, consumer, produce, values_of

pytestmark = pytest.mark.integration


def topic_configs(bootstrap: str, names: list[str]) -> dict[str, dict[str, str]]:
    """Topic -> the configs these tests look at, as the cluster reports them."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    resources = [ConfigResource(ConfigResource.Type.TOPIC, name) for name in names]
    configs = {}
    for resource, future in admin.describe_configs(resources, request_timeout=10).items():
        entries = future.result()
        configs[resource.name] = {
            key: entries[key].value for key in ("min.insync.replicas", "retention.ms")
        }
    return configs


def in_sync_replicas(bootstrap: str, topic: str, partition: int) -> tuple[int, list[int]]:
    """(leader, ISR) of one partition, as the metadata says now."""
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    state = metadata.topics[topic].partitions[partition]
    return state.leader, sorted(state.isrs)


def produce_one(bootstrap: str, topic: str, value: bytes) -> Message:
    """Produce one record idempotently with acks=all; return it as delivered (partition known)."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    delivered: list[Message] = []

    def on_delivery(_: KafkaError | None, message: Message) -> None:
        delivered.append(message)  # message.error() says how it went

    producer.produce(topic, key=b"user-1", value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "record still unsent after 30 s"
    assert delivered[0].error() is None, delivered[0].error()
    return delivered[0]


def wait_until(what: str, check: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"not {what} after {timeout_s} s"
        time.sleep(0.2)


def test_three_nodes_serve(kafka_cluster: KafkaCluster) -> None:
    assert kafka_cluster.is_running()
    assert kafka_cluster.brokers() == {1, 2, 3}
    assert len(kafka_cluster.bootstrap_servers.split(",")) == 3


def test_topics_have_three_replicas_two_in_sync_and_their_retention(
    kafka_cluster: KafkaCluster,
) -> None:
    info = kafka_cluster.describe_topics()
    assert {name: (info[name].partitions, info[name].replication) for name in TOPIC_NAMES} == {
        name: (kafka_cluster.partitions, 3) for name in TOPIC_NAMES
    }
    configs = topic_configs(kafka_cluster.bootstrap_servers, TOPIC_NAMES)
    assert configs == {
        name: {"min.insync.replicas": "2", "retention.ms": str(retention_ms(name))}
        for name in TOPIC_NAMES
    }
    assert kafka_cluster.create_topics() == []


def test_acks_all_round_trip_and_replicated_offsets(kafka_cluster: KafkaCluster) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    sent = [f"cluster-{uuid.uuid4()}".encode() for _ in range(5)]
    produce(bootstrap, "orders", sent)
    with consumer(bootstrap, "orders") as c:
        got = consume_until(c, lambda ms: set(sent) <= values_of(ms))
        c.commit(message=got[-1], asynchronous=False)  # creates __consumer_offsets
    offsets = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    partitions = offsets.topics["__consumer_offsets"].partitions.values()
    assert {len(p.replicas) for p in partitions} == {3}
    assert (
        topic_configs(bootstrap, ["__consumer_offsets"])["__consumer_offsets"][
            "min.insync.replicas"
        ]
        == "2"
    )


def test_a_killed_node_is_survived_and_rejoins(kafka_cluster: KafkaCluster) -> None:
    bootstrap = kafka_cluster.bootstrap_servers
    run = uuid.uuid4().hex
    first = produce_one(bootstrap, "payments", f"{run}-before".encode())
    partition = first.partition()
    assert partition is not None
    leader, isr = in_sync_replicas(bootstrap, "payments", partition)
    assert isr == [1, 2, 3]
    victim = next(node for node in kafka_cluster.nodes if node.node_id == leader)

    assert victim.kill()  # the partition's leader dies like a crashed machine
    try:
        during = produce_one(bootstrap, "payments", f"{run}-during".encode())  # acks=all
        assert during.partition() == partition
        wait_until(
            "fenced and out of the ISR",
            lambda: (
                in_sync_replicas(bootstrap, "payments", partition)[1]
                == sorted({1, 2, 3} - {leader})
            ),
        )
        produce_one(bootstrap, "payments", f"{run}-two-in-sync".encode())
    finally:
        victim.start()  # the session cluster must be whole again for the tests after this one

    kafka_cluster.wait_in_sync(timeout=60)
    assert in_sync_replicas(bootstrap, "payments", partition)[1] == [1, 2, 3]
    sent = {f"{run}-{phase}".encode() for phase in ("before", "during", "two-in-sync")}
    with consumer(bootstrap, "payments") as c:
        consume_until(c, lambda ms: sent <= values_of(ms))


def test_node_layout_and_discovery(tmp_path: Path) -> None:
    cluster = KafkaCluster(3, data_dir=tmp_path / "kafka", run_dir=tmp_path / "run")
    assert cluster.bootstrap_servers == "127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292"
    assert [n.controller_port for n in cluster.nodes] == [9093, 9193, 9293]
    assert [n.node_id for n in cluster.nodes] == [1, 2, 3]
    assert [n.pid_file.name for n in cluster.nodes] == ["kafka.pid", "kafka-1.pid", "kafka-2.pid"]
    assert [n.data_dir.name for n in cluster.nodes] == ["kafka", "kafka-1", "kafka-2"]
    assert nodes_found(tmp_path / "kafka", tmp_path / "run") == 0
    (tmp_path / "kafka-2").mkdir()
    assert nodes_found(tmp_path / "kafka", tmp_path / "run") == 3
    single = KafkaCluster(1, data_dir=tmp_path / "kafka", run_dir=tmp_path / "run")
    assert single.nodes[0].standalone and single.bootstrap_servers == "127.0.0.1:9092"
