"""Command line for the local Kafka; settings come from the BROKERS and KAFKA_* environment."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path

from deploy.kafka.cluster import KafkaCluster, nodes_found
from deploy.kafka.install import REPO_ROOT, KafkaRuntimeError, ensure_jars
from deploy.kafka.security import KafkaSecurity


def brokers_from_env() -> int:
    """BROKERS: how many nodes `up` starts (default 1, the single node)."""
    value = os.environ.get("BROKERS", "1")
    if not value.isdigit() or int(value) < 1:
        raise KafkaRuntimeError(f"BROKERS={value!r}: give a number of nodes, 1 or more")
    return int(value)


def security_from_env() -> KafkaSecurity | None:
    """KAFKA_SECURITY: `plaintext` (default) or `sasl_ssl` (secrets in KAFKA_SECRETS_DIR,
    default var/secrets, generated if missing)."""
    value = os.environ.get("KAFKA_SECURITY", "plaintext").strip().lower() or "plaintext"
    if value == "plaintext":
        return None
    if value != "sasl_ssl":
        raise KafkaRuntimeError(f"KAFKA_SECURITY={value!r}: choose plaintext or sasl_ssl")
    folder = os.environ.get("KAFKA_SECRETS_DIR") or str(REPO_ROOT / "var" / "secrets")
    return KafkaSecurity.dev(Path(folder))


def cluster_from_env(size: int) -> KafkaCluster:
    """The nodes the Makefile means: KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_DATA_DIR, ..."""
    env = os.environ.get
    var = REPO_ROOT / "var"
    return KafkaCluster(
        size,
        port=int(env("KAFKA_PORT", "9092")),
        controller_port=int(env("KAFKA_CONTROLLER_PORT", "9093")),
        data_dir=Path(env("KAFKA_DATA_DIR", str(var / "kafka"))).resolve(),
        run_dir=var / "run",
        log_dir=var / "log",
        partitions=int(env("KAFKA_PARTITIONS", "6")),
        security=security_from_env(),
    )


def found_on_disk(kafka: KafkaCluster) -> int:
    """How many nodes left a pid file or data folder next to node 0's."""
    return nodes_found(kafka.nodes[0].data_dir, kafka.nodes[0].run_dir)


def print_topics(kafka: KafkaCluster) -> None:
    topics = kafka.describe_topics()
    print(f"topics on {kafka.bootstrap_servers}:")
    for name, info in topics.items():
        lagging = f", {info.under_replicated} under-replicated" if info.under_replicated else ""
        print(
            f"  {name:<20} {info.partitions} partitions, replication {info.replication}, "
            f"min.insync.replicas {info.min_insync}{lagging}"
        )
    if not topics:
        print("  (none)")


def up(kafka: KafkaCluster) -> None:
    if (found := found_on_disk(kafka)) > kafka.size:
        raise KafkaRuntimeError(
            f"found {found} Kafka nodes' data or pid files but BROKERS={kafka.size}: start them "
            f"with BROKERS={found}, or remove them first (make kafka-clean)"
        )
    if kafka.is_running():
        pids = ", ".join(str(pid) for pid in kafka.pids())
        print(f"Kafka is already running at {kafka.bootstrap_servers} (pid {pids}): nothing to do")
        return
    kafka.start(timeout=float(os.environ.get("KAFKA_START_TIMEOUT", "90")))
    kafka.create_topics()
    logs = ", ".join(str(node.log_file) for node in kafka.nodes)
    print(f"broker log{'s' if kafka.size > 1 else ''}: {logs}; stop with `make kafka-down`")
    print(f"KAFKA_BOOTSTRAP_SERVERS={kafka.bootstrap_servers}")
    if (security := kafka.nodes[0].security) is not None:
        print("SASL_SSL (SCRAM-SHA-512): clients need")
        for name, value in security.client_env().items():
            print(f"  {name}={value}")
    print_topics(kafka)


def down(kafka: KafkaCluster) -> None:
    if not kafka.stop():
        print("Kafka is not running: nothing to stop")
        return
    data = ", ".join(str(node.data_dir) for node in kafka.nodes if node.data_dir.exists())
    print(f"data kept in {data} (`make kafka-clean` removes it)")


def clean(kafka: KafkaCluster) -> None:
    kafka.clean()
    print(f"Kafka data removed: {', '.join(str(node.data_dir) for node in kafka.nodes)}")


def status(kafka: KafkaCluster) -> None:
    if kafka.size == 1:
        node = kafka.nodes[0]
        pid = node.pid()
        state = f"running at {node.bootstrap_servers} (pid {pid})" if pid else "not running"
        print(f"Kafka is {state}; data {node.data_dir}; log {node.log_file}")
        return
    running = sum(pid is not None for pid in kafka.pids())
    print(f"Kafka cluster: {running} of {kafka.size} nodes running; {kafka.bootstrap_servers}")
    brokers = kafka.brokers() if running else set()
    for j, node in enumerate(kafka.nodes):
        pid = node.pid()
        if pid is None:
            state = "not running"
        else:
            listed = "serving" if node.node_id in brokers else "not (yet) a serving broker"
            state = f"running at {node.bootstrap_servers} (pid {pid}), {listed}"
        where = f"data {node.data_dir}; log {node.log_file}"
        print(f"  node {j} (node.id {node.node_id}) {state}; {where}")


def topics(kafka: KafkaCluster) -> None:
    if not any(kafka.pids()):
        raise KafkaRuntimeError("Kafka is not running: start it with `make kafka-up`")
    print_topics(kafka)


def jars(_: KafkaCluster) -> None:
    fetched = ensure_jars()
    print("Kafka jars fetched" if fetched else "Kafka jars already present")


COMMANDS: dict[str, Callable[[KafkaCluster], None]] = {
    "up": up,
    "down": down,
    "clean": clean,
    "status": status,
    "topics": topics,
    "jars": jars,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.kafka", description=__doc__)
    parser.add_argument("command", choices=COMMANDS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="==> %(message)s", stream=sys.stdout)
    try:
        size = brokers_from_env()
        if args.command != "up":  # down, clean, status, topics: every node that exists
            size = max(size, found_on_disk(cluster_from_env(1)))
        COMMANDS[args.command](cluster_from_env(size))
    except KafkaRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
