"""Helpers shared by the integration, end-to-end and fault tests."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

from confluent_kafka import (
    Consumer,
    KafkaException,
    Message,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient, OffsetSpec

from paysaga.v1 import orders_pb2, orders_pb2_grpc

T = TypeVar("T")

#: (topic, partition) -> offset.
Offsets = dict[tuple[str, int], int]

TERMINAL = (orders_pb2.ORDER_STATUS_COMPLETED, orders_pb2.ORDER_STATUS_FAILED)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for(
    what: str, probe: Callable[[], T | None], timeout_s: float = 60.0, interval_s: float = 0.05
) -> T:
    """Poll `probe` until it returns something truthy; fail naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while True:
        result = probe()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)


def wait_terminal(
    stub: orders_pb2_grpc.OrderServiceStub, order_id: str, timeout_s: float = 60.0
) -> orders_pb2.Order:
    """The order once it is COMPLETED or FAILED."""

    def probe() -> orders_pb2.Order | None:
        order = stub.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id)).order
        return order if order.status in TERMINAL else None

    return wait_for(f"order {order_id} to end", probe, timeout_s)


def read_topic(
    bootstrap: str,
    topic: str,
    match: Callable[[Message], bool],
    count: int = 1,
    timeout_s: float = 60.0,
) -> list[Message]:
    """Read `topic` from the start until `count` records satisfy `match`; return those."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"test-reader-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    found: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(found) < count:
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"timed out: {len(found)} of {count} matching records on {topic}"
                )
            for record in consumer.consume(500, 0.5):
                if record.error() is None and match(record):
                    found.append(record)
    finally:
        consumer.close()
    return found


def end_offsets(bootstrap: str, topics: list[str], timeout_s: float = 60.0) -> Offsets:
    """The high watermark of every partition of `topics` (retried while leaders move)."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            metadata = admin.list_topics(timeout=10)
            request = {
                TopicPartition(topic, partition): OffsetSpec.latest()
                for topic in topics
                for partition in metadata.topics[topic].partitions
            }
            return {
                (tp.topic, tp.partition): future.result(10).offset
                for tp, future in admin.list_offsets(request, request_timeout=10).items()
            }
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def pin_groups_to_end(
    bootstrap: str, groups: dict[str, list[str]], timeout_s: float = 90.0
) -> Offsets:
    """Commit the current end of its topics for each new consumer group; return the ends.

    Retried while the group coordinator is not ready (a cluster that has just started).
    """
    ends = end_offsets(bootstrap, sorted({t for topics in groups.values() for t in topics}))
    commit_group_offsets(bootstrap, groups, ends, timeout_s)
    return ends


def commit_group_offsets(
    bootstrap: str, groups: dict[str, list[str]], offsets: Offsets, timeout_s: float = 90.0
) -> None:
    """Commit `offsets` for each (empty) group, of its topics only; retried while the group
    coordinator is not ready.

    Committed by a consumer of the group that never subscribes, not by the admin client's
    AlterConsumerGroupOffsets: librdkafka can abort the process when such an admin
    request's connection drops, as it does right after a broker restarts."""
    deadline = time.monotonic() + timeout_s
    for group, topics in groups.items():
        partitions = [TopicPartition(t, p, o) for (t, p), o in offsets.items() if t in topics]
        committer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False}
        )
        try:
            while True:
                try:
                    committer.commit(offsets=partitions, asynchronous=False)
                    break
                except KafkaException:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(1.0)
        finally:
            committer.close()
