"""The system under test: a deploy.stack.Stack on the suite's Kafka, its own consumer groups."""

from __future__ import annotations

import re
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from confluent_kafka import Consumer, TopicPartition

from deploy.kafka.cluster import KafkaCluster
from deploy.kafka.runtime import KafkaRuntime
from deploy.postgres.runtime import PostgresRuntime
from deploy.stack.datastores import DbKind, fresh_databases
from deploy.stack.stack import Stack
from paysaga.v1 import orders_pb2_grpc, payments_pb2_grpc
from services.saga.topics import TOPICS
from tests.support import Offsets, commit_group_offsets, end_offsets, pin_groups_to_end

#: Log lines worth showing whatever their place: fatal client errors, crashes.
ALARM = re.compile(r"FATAL|CRITICAL|Traceback")

#: The topics each service's consumer group reads.
CONSUMES = {"order": ["transactions"], "payment": ["orders", "payments"]}


class FaultStack(Stack):
    """Order and Payment replicas with their own databases and consumer groups.

    The groups are new for each stack and are pinned to the current end of their topics
    before the first start, so a stack sees only its own events on the shared Kafka;
    `base` keeps those offsets: they are this stack's "earliest" for a replay. On
    PostgreSQL each stack gets new databases, dropped when it stops.
    """

    def __init__(
        self,
        kafka: KafkaRuntime | KafkaCluster,
        home: Path,
        name: str,
        *,
        db: DbKind = "sqlite",
        replicas: int = 1,
        postgres: PostgresRuntime | None = None,
    ) -> None:
        tag = f"{name}-{uuid.uuid4().hex[:6]}"
        self.groups = {"order": f"faults-{tag}-order", "payment": f"faults-{tag}-payment"}
        env = {
            "ORDER_CONSUMER_GROUP": self.groups["order"],
            "PAYMENT_CONSUMER_GROUP": self.groups["payment"],
            "ORDER_SHUTDOWN_GRACE_S": "3",
            "PAYMENT_SHUTDOWN_GRACE_S": "3",
        }
        databases = fresh_databases(postgres) if db == "postgres" and postgres else None
        super().__init__(
            home,
            db=db,
            replicas=replicas,
            ports="free",
            env=env,
            kafka=kafka,
            postgres=postgres,
            databases=databases,
            detach=False,
        )
        self.name = name
        self.base: Offsets = {}
        self._channels: list[grpc.Channel] = []
        self._readers: dict[str, Consumer] = {}

    @property
    def broker(self) -> KafkaRuntime:
        """The suite's single broker (scenarios on a cluster use `kafka.nodes[j]`)."""
        assert isinstance(self.kafka, KafkaRuntime)
        return self.kafka

    @property
    def order_url(self) -> str:
        return self.database_urls["order"]

    @property
    def payment_url(self) -> str:
        return self.database_urls["payment"]

    def orders_stub(self, replica: int = 0) -> orders_pb2_grpc.OrderServiceStub:
        channel = grpc.insecure_channel(self.address("order", replica))
        self._channels.append(channel)
        return orders_pb2_grpc.OrderServiceStub(channel)

    def payments_stub(self, replica: int = 0) -> payments_pb2_grpc.PaymentServiceStub:
        channel = grpc.insecure_channel(self.address("payment", replica))
        self._channels.append(channel)
        return payments_pb2_grpc.PaymentServiceStub(channel)

    def start(self) -> None:
        """Pin the new groups to the end of their topics, then migrate, seed and start."""
        self.base = pin_groups_to_end(
            self.bootstrap, {self.groups[service]: topics for service, topics in CONSUMES.items()}
        )
        super().start()

    @contextmanager
    def running(self) -> Iterator[FaultStack]:
        """Started for a scenario; after it stopped, with Kafka left whole for the next one:
        a frozen process is continued first (it could not stop gracefully), and every broker
        a scenario killed is started again (a cluster's replicas back in sync)."""
        try:
            self.start()
            yield self
        finally:
            for proc in self.all_processes():
                proc.signal(signal.SIGCONT)
            self.stop()
            self._restore_kafka()

    def _restore_kafka(self) -> None:
        if isinstance(self.kafka, KafkaCluster):
            for node in self.kafka.nodes:
                if not node.is_running():
                    node.start()
            self.kafka.wait_in_sync()
        elif not self.kafka.is_running():
            self.kafka.start()

    def stop(self) -> None:
        for channel in self._channels:
            channel.close()
        for reader in self._readers.values():
            reader.close()
        super().stop()
        if self.postgres is not None:
            for url in self.database_urls.values():
                self.postgres.drop_database(url.rsplit("/", 1)[1])

    def set_group_offsets(self, offsets: Offsets) -> None:
        """Commit `offsets` for both groups (each group only its topics); groups must be empty."""
        groups = {group: CONSUMES[service] for service, group in self.groups.items()}
        commit_group_offsets(self.bootstrap, groups, offsets)

    def committed(self, service: str) -> Offsets:
        """The offsets a service's group has committed (-1001: none yet)."""
        # A consumer that never subscribes reads them (services.common.operations.backlog
        # says why not the admin client).
        reader = self._readers.get(service)
        if reader is None:
            group = self.groups[service]
            reader = Consumer({"bootstrap.servers": self.bootstrap, "group.id": group})
            self._readers[service] = reader
        partitions = [TopicPartition(t, p) for t, p in self.base if t in CONSUMES[service]]
        return {
            (tp.topic, tp.partition): tp.offset for tp in reader.committed(partitions, timeout=30)
        }

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
            for p in self.all_processes()
            if p.log_file.exists()
        )

    def dead_letters(self) -> int:
        """How many records all dead-letter topics hold (their end offsets summed)."""
        dlts = [topic.dlt for topic in TOPICS.values()]
        return sum(end_offsets(self.bootstrap, dlts).values())

    def wait_broker_serving(self, timeout_s: float = 60.0) -> None:
        """After a broker restart, wait until every replica reports SERVING again."""
        deadline = time.monotonic() + timeout_s
        while not self.serving():
            if time.monotonic() > deadline:
                raise AssertionError("services not SERVING again after the broker came back")
            time.sleep(0.2)

    def log_tails(self, lines: int = 15) -> str:
        """The last lines of every replica's log, and its alarming lines, for a failure message."""
        parts = []
        for proc in self.all_processes():
            text = proc.log_file.read_text(errors="replace") if proc.log_file.exists() else ""
            alarms = [line for line in text.splitlines() if ALARM.search(line)]
            if alarms:
                parts.append(f"--- {proc.name}: {len(alarms)} alarming line(s) ---")
                parts += [line[:300] for line in alarms[:5]]
            parts.append(f"--- {proc.name} log ---\n{proc.log_tail(lines)}")
        return "\n".join(parts)
