"""Both services as real processes on the suite's private broker, fresh SQLite files each time."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import grpc
from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from deploy.kafka.runtime import KafkaRuntime
from deploy.stack import SERVICES, ServiceProcess, is_serving
from paysaga.v1 import orders_pb2_grpc, payments_pb2_grpc
from services.common.topics import TOPICS
from tests.support import free_port

#: The topics each service's consumer group reads.
CONSUMES = {"order": ["transactions"], "payment": ["orders", "payments"]}

Offsets = dict[tuple[str, int], int]


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


class FaultStack:
    """Order and Payment processes with their own databases and consumer groups.

    The groups are new for each stack and are pinned to the current end of their topics
    before the first start, so a stack sees only its own events on the shared broker;
    `base` keeps those offsets: they are this stack's "earliest" for a replay.
    """

    def __init__(self, broker: KafkaRuntime, home: Path, name: str) -> None:
        self.broker = broker
        self.home = home
        self.name = name
        tag = f"{name}-{uuid.uuid4().hex[:6]}"
        self.groups = {"order": f"faults-{tag}-order", "payment": f"faults-{tag}-payment"}
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
            "ORDER_DATABASE_URL": f"sqlite:///{self.order_db}",
            "PAYMENT_DATABASE_URL": f"sqlite:///{self.payment_db}",
            "ORDER_CONSUMER_GROUP": self.groups["order"],
            "PAYMENT_CONSUMER_GROUP": self.groups["payment"],
            "ORDER_SHUTDOWN_GRACE_S": "3",
            "PAYMENT_SHUTDOWN_GRACE_S": "3",
        }
        self.processes = {
            spec.name: ServiceProcess(
                spec, f"127.0.0.1:{free_port()}", env, run_dir=home / "run", log_dir=home / "log"
            )
            for spec in SERVICES
        }
        self.base: Offsets = {}
        self._channels: list[grpc.Channel] = []

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap_servers

    @property
    def order_db(self) -> Path:
        return self.home / "order.db"

    @property
    def payment_db(self) -> Path:
        return self.home / "payment.db"

    @property
    def order_address(self) -> str:
        return self.processes["order"].address

    @property
    def payment_address(self) -> str:
        return self.processes["payment"].address

    def orders_stub(self) -> orders_pb2_grpc.OrderServiceStub:
        channel = grpc.insecure_channel(self.order_address)
        self._channels.append(channel)
        return orders_pb2_grpc.OrderServiceStub(channel)

    def payments_stub(self) -> payments_pb2_grpc.PaymentServiceStub:
        channel = grpc.insecure_channel(self.payment_address)
        self._channels.append(channel)
        return payments_pb2_grpc.PaymentServiceStub(channel)

    def start(self) -> None:
        """Pin the new groups to the end of their topics, start both services, wait SERVING."""
        self.base = end_offsets(self.bootstrap, [*TOPICS])
        self.set_group_offsets(self.base)
        self.start_services()

    def stop(self) -> None:
        for channel in self._channels:
            channel.close()
        self.stop_services()

    def stop_services(self) -> None:
        """SIGTERM both services (graceful: the consumers commit and leave their groups)."""
        for proc in self.processes.values():
            proc.stop()

    def start_services(self) -> None:
        for proc in self.processes.values():
            proc.start()
        for proc in self.processes.values():
            proc.wait_serving()

    def kill(self, name: str) -> None:
        """kill -9 one service."""
        self.processes[name].kill()

    def restart(self, name: str) -> None:
        proc = self.processes[name]
        proc.start()
        proc.wait_serving()

    def set_group_offsets(self, offsets: Offsets) -> None:
        """Commit `offsets` for both groups (each group only its topics); groups must be empty."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for service, group in self.groups.items():
            partitions = [
                TopicPartition(t, p, o) for (t, p), o in offsets.items() if t in CONSUMES[service]
            ]
            request = [ConsumerGroupTopicPartitions(group, partitions)]
            for future in admin.alter_consumer_group_offsets(request).values():
                future.result()

    def committed(self, service: str) -> Offsets:
        """The offsets a service's group has committed."""
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        request = [ConsumerGroupTopicPartitions(self.groups[service])]
        found: Offsets = {}
        for future in admin.list_consumer_group_offsets(request).values():
            for tp in future.result().topic_partitions:
                found[(tp.topic, tp.partition)] = tp.offset
        return found

    def caught_up(self) -> bool:
        """True when both groups have committed everything on their topics."""
        for service, topics in CONSUMES.items():
            ends = end_offsets(self.bootstrap, topics)
            done = self.committed(service)
            if any(done.get(tp, -1) < end for tp, end in ends.items() if end > self.base[tp]):
                return False
        return True

    def reached(self, target: Offsets) -> bool:
        """True when both groups have committed at least `target` on their topics."""
        for service, topics in CONSUMES.items():
            done = self.committed(service)
            if any(done.get(tp, -1) < o for tp, o in target.items() if tp[0] in topics):
                return False
        return True

    def redeliveries(self) -> int:
        """Events the services received again and skipped by their inbox (from their logs)."""
        return sum(
            p.log_file.read_text(errors="replace").count("duplicate event skipped")
            for p in self.processes.values()
            if p.log_file.exists()
        )

    def dead_letters(self) -> int:
        """How many records all dead-letter topics hold (their end offsets summed)."""
        dlts = [topic.dlt for topic in TOPICS.values()]
        return sum(end_offsets(self.bootstrap, dlts).values())

    def serving(self) -> bool:
        return all(is_serving(p.address) for p in self.processes.values())

    def alive(self) -> bool:
        return all(p.pid() is not None for p in self.processes.values())

    def wait_broker_serving(self, timeout_s: float = 60.0) -> None:
        """After a broker restart, wait until both services report SERVING again."""
        deadline = time.monotonic() + timeout_s
        while not self.serving():
            if time.monotonic() > deadline:
                raise AssertionError("services not SERVING again after the broker came back")
            time.sleep(0.2)
