"""The local Kafka runtime: topics, an exactly-configured round trip, restarts, clear errors."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from deploy.kafka.runtime import KafkaRuntime, PortInUseError
from deploy.kafka.topics import TOPIC_NAMES

pytestmark = pytest.mark.integration


def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    """Produce with the settings the services use (idempotent, acks=all); fail on any error."""
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all"})
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _: Message) -> None:
        if err is not None:
            errors.append(err)

    for value in values:
        producer.produce(topic, key=b"user-1", value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "messages still unsent after 30 s"
    assert errors == []


@contextmanager
def consumer(bootstrap: str, topic: str) -> Iterator[Consumer]:
    """A consumer in a new group that commits by hand, reading from the start."""
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
        }
    )
    c.subscribe([topic])
    try:
        yield c
    finally:
        c.close()


def consume_until(
    c: Consumer, done: Callable[[list[Message]], bool], timeout_s: float = 60
) -> list[Message]:
    """Poll until `done(messages)` holds; fail after timeout_s."""
    messages: list[Message] = []
    deadline = time.monotonic() + timeout_s
    while not done(messages):
        assert time.monotonic() < deadline, f"only {len(messages)} messages after {timeout_s} s"
        msg = c.poll(0.5)
        if msg is not None:
            assert msg.error() is None, msg.error()
            messages.append(msg)
    return messages


def values_of(messages: list[Message]) -> set[bytes | None]:
    return {m.value() for m in messages}


def test_topics_exist_with_their_partitions(kafka_broker: KafkaRuntime) -> None:
    topics = kafka_broker.topics()
    assert {name: topics.get(name) for name in TOPIC_NAMES} == {
        name: kafka_broker.partitions for name in TOPIC_NAMES
    }
    assert {"orders", "payments", "transactions", "orders.dlt"} <= set(TOPIC_NAMES)


def test_creating_topics_again_changes_nothing(kafka_broker: KafkaRuntime) -> None:
    assert kafka_broker.create_topics() == []


def test_start_when_running_is_a_no_op(kafka_broker: KafkaRuntime) -> None:
    pid = kafka_broker.pid()
    assert pid is not None
    assert kafka_broker.start() == pid


def test_idempotent_producer_and_manual_commit_round_trip(kafka_broker: KafkaRuntime) -> None:
    run = uuid.uuid4().hex.encode()
    sent = [run + b"-%d" % i for i in range(10)]
    produce(kafka_broker.bootstrap_servers, "orders", sent)

    with consumer(kafka_broker.bootstrap_servers, "orders") as c:
        got = consume_until(c, lambda ms: set(sent) <= values_of(ms))
        ours = [m for m in got if m.value() in set(sent)]
        assert [m.value() for m in ours] == sent  # one key, one partition: in order
        last = ours[-1]
        c.commit(message=last, asynchronous=False)
        partition, offset = last.partition(), last.offset()
        assert partition is not None and offset is not None
        (committed,) = c.committed([TopicPartition("orders", partition)], timeout=10)
        assert committed.offset == offset + 1


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "kill"])
def test_message_produced_before_a_restart_is_consumed_after(
    kafka_broker: KafkaRuntime, crash: bool
) -> None:
    value = f"before-restart-{uuid.uuid4()}".encode()
    produce(kafka_broker.bootstrap_servers, "payments", [value])
    try:
        assert kafka_broker.kill() if crash else kafka_broker.stop()
        assert not kafka_broker.is_running()
    finally:
        kafka_broker.start()  # the session broker must be up for the tests after this one

    assert kafka_broker.topics()["payments"] == kafka_broker.partitions
    with consumer(kafka_broker.bootstrap_servers, "payments") as c:
        consume_until(c, lambda ms: value in values_of(ms))


def test_a_taken_port_is_reported_at_once(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        kafka = KafkaRuntime(
            port=port, controller_port=port + 1, data_dir=tmp_path / "data", run_dir=tmp_path
        )
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port} is already in use"):
            kafka.start()
    assert not (tmp_path / "data").exists()  # refused before touching anything
