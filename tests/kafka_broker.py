"""Pytest plugin: a private real Kafka for the whole test session, one node or a cluster of three.

`kafka_broker`: one KRaft node (what most tests use). `kafka_cluster`: three nodes, each
broker+controller, topics with replication 3 and min.insync.replicas 2 (fault tests kill one).
`kafka_sasl_broker`: one node whose only client listener is SASL_SSL (SCRAM-SHA-512), as
`make kafka-up KAFKA_SECURITY=sasl_ssl` runs it; its `.security` has the secrets.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from deploy.kafka.cluster import KafkaCluster
from deploy.kafka.install import check_java, ensure_jars
from deploy.kafka.runtime import KafkaRuntime, KafkaRuntimeError
from deploy.kafka.security import KafkaSecurity


def _free_ports(count: int) -> list[int]:
    """Distinct free loopback ports (held together while chosen, so never the same one twice)."""
    socks = [socket.socket() for _ in range(count)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _broker(
    tmp_path_factory: pytest.TempPathFactory, name: str, secured: bool
) -> Iterator[KafkaRuntime]:
    base = tmp_path_factory.mktemp(name)
    port, controller_port = _free_ports(2)
    kafka = KafkaRuntime(
        port=port,
        controller_port=controller_port,
        data_dir=base / "data",
        run_dir=base / "run",
        log_file=base / "kafka.log",
        partitions=int(os.environ.get("KAFKA_PARTITIONS", "6")),
        detach=False,  # same process group: a Ctrl-C of pytest stops the broker too
        security=KafkaSecurity.dev(base / "secrets") if secured else None,
    )
    try:
        check_java()
        ensure_jars()
        kafka.start()
        kafka.create_topics()
    except KafkaRuntimeError as exc:
        kafka.stop()
        pytest.fail(f"could not start the test Kafka broker: {exc}", pytrace=False)
    try:
        yield kafka
    finally:
        kafka.stop()


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaRuntime]:
    """A broker on free ports with a temporary data folder, topics created; stopped at the end.

    Tests may `.stop()`, `.kill()` and `.start()` it (same ports, same data) but must leave it
    running. It never touches a broker a user runs on 9092.
    """
    yield from _broker(tmp_path_factory, "kafka", secured=False)


@pytest.fixture(scope="session")
def kafka_sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaRuntime]:
    """Like kafka_broker, but its client listener is SASL_SSL (clients: `.client_config`)."""
    yield from _broker(tmp_path_factory, "kafka-sasl", secured=True)


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """Three nodes on free ports with temporary data folders, topics created; stopped at the end.

    Tests may `.kill()`, `.stop()` and `.start()` single nodes (`kafka_cluster.nodes[j]`, same
    ports, same data) but must leave all three running, every replica back in sync.
    """
    base = tmp_path_factory.mktemp("kafka-cluster")
    ports = _free_ports(6)
    cluster = KafkaCluster(
        3,
        ports=list(zip(ports[0::2], ports[1::2], strict=True)),
        data_dir=base / "data",
        run_dir=base / "run",
        log_dir=base / "log",
        partitions=int(os.environ.get("KAFKA_PARTITIONS", "6")),
        detach=False,  # same process group: a Ctrl-C of pytest stops the nodes too
    )
    try:
        check_java()
        ensure_jars()
        cluster.start()
        cluster.create_topics()
    except KafkaRuntimeError as exc:
        cluster.stop()
        pytest.fail(f"could not start the test Kafka cluster: {exc}", pytrace=False)
    try:
        yield cluster
    finally:
        cluster.stop()
