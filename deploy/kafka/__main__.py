"""Command line for the local Kafka broker; settings come from KAFKA_* environment variables."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

from deploy.kafka.install import REPO_ROOT, KafkaRuntimeError, ensure_jars
from deploy.kafka.runtime import KafkaRuntime


def runtime_from_env() -> KafkaRuntime:
    """The broker the Makefile means: KAFKA_PORT, KAFKA_CONTROLLER_PORT, KAFKA_DATA_DIR, ..."""
    env = os.environ.get
    var = REPO_ROOT / "var"
    return KafkaRuntime(
        port=int(env("KAFKA_PORT", "9092")),
        controller_port=int(env("KAFKA_CONTROLLER_PORT", "9093")),
        data_dir=Path(env("KAFKA_DATA_DIR", str(var / "kafka"))),
        run_dir=var / "run",
        log_file=var / "log" / "kafka.log",
        partitions=int(env("KAFKA_PARTITIONS", "6")),
    )


def print_topics(kafka: KafkaRuntime) -> None:
    topics = kafka.topics()
    print(f"topics on {kafka.bootstrap_servers}:")
    for name, partitions in topics.items():
        print(f"  {name:<20} {partitions} partitions")
    if not topics:
        print("  (none)")


def up(kafka: KafkaRuntime) -> None:
    if (pid := kafka.pid()) is not None:
        print(f"Kafka is already running at {kafka.bootstrap_servers} (pid {pid}): nothing to do")
        return
    kafka.start(timeout=float(os.environ.get("KAFKA_START_TIMEOUT", "90")))
    kafka.create_topics()
    print(f"broker log: {kafka.log_file}; stop it with `make kafka-down`")
    print_topics(kafka)


def down(kafka: KafkaRuntime) -> None:
    if not kafka.stop():
        print("Kafka is not running: nothing to stop")
        return
    print(f"data kept in {kafka.data_dir} (`make kafka-clean` removes it)")


def clean(kafka: KafkaRuntime) -> None:
    kafka.clean()
    print(f"Kafka data removed: {kafka.data_dir}")


def status(kafka: KafkaRuntime) -> None:
    pid = kafka.pid()
    state = f"running at {kafka.bootstrap_servers} (pid {pid})" if pid else "not running"
    print(f"Kafka is {state}; data {kafka.data_dir}; log {kafka.log_file}")


def topics(kafka: KafkaRuntime) -> None:
    if not kafka.is_running():
        raise KafkaRuntimeError("Kafka is not running: start it with `make kafka-up`")
    print_topics(kafka)


def jars(_: KafkaRuntime) -> None:
    fetched = ensure_jars()
    print("Kafka jars fetched" if fetched else "Kafka jars already present")


COMMANDS = {
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
        COMMANDS[args.command](runtime_from_env())
    except KafkaRuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
