"""A KRaft cluster on this machine: N nodes (each broker+controller, all voters), one set of jars.

Node j (0-based, node.id j+1) listens on port + 100·j and controller_port + 100·j; node 0 keeps
the single node's names (data `var/kafka`, `var/run/kafka.pid`, `var/log/kafka.log`), node j ≥ 1
appends `-j` (`var/kafka-1`, `kafka-1.pid`, `kafka-1.log`). A cluster of one is exactly the
single node. The nodes are formatted together (one cluster id, every voter listed with its
metadata directory id: a KIP-853 dynamic quorum) and started together, since a node only
serves once a majority of the voters runs.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from confluent_kafka import KafkaException

from deploy.kafka import topics
from deploy.kafka.install import REPO_ROOT, KafkaRuntimeError, check_java, ensure_jars
from deploy.kafka.runtime import KafkaRuntime, kafka_uuid
from deploy.kafka.security import KafkaSecurity
from deploy.kafka.topics import Replication, TopicInfo

__all__ = ["PORT_STEP", "KafkaCluster", "nodes_found"]

log = logging.getLogger(__name__)

PORT_STEP = 100  # node j: port + PORT_STEP·j, controller port + PORT_STEP·j
T = TypeVar("T")


def node_name(j: int) -> str:
    """Names node j's pid file and log: kafka, kafka-1, kafka-2, ..."""
    return "kafka" if j == 0 else f"kafka-{j}"


def node_data_dir(data_dir: Path, j: int) -> Path:
    return data_dir if j == 0 else data_dir.with_name(f"{data_dir.name}-{j}")


def nodes_found(data_dir: Path, run_dir: Path) -> int:
    """How many nodes left a trace (pid file or data folder): 1 + the highest node index."""
    data_dir, run_dir = Path(data_dir), Path(run_dir)
    found = [0] if data_dir.exists() or (run_dir / "kafka.pid").exists() else []
    for prefix, paths in (
        (f"{data_dir.name}-", data_dir.parent.glob(f"{data_dir.name}-*")),
        ("kafka-", run_dir.glob("kafka-*.pid")),
    ):
        for path in paths:
            index = path.name.removeprefix(prefix).removesuffix(".pid")
            if index.isdigit() and int(index) > 0:
                found.append(int(index))
    return max(found) + 1 if found else 0


def _in_parallel(call: Callable[[KafkaRuntime], T], nodes: Sequence[KafkaRuntime]) -> list[T]:
    """call(node) for every node at once; raise the first error once all have finished."""
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        futures = [pool.submit(call, node) for node in nodes]
    errors = [exc for future in futures if (exc := future.exception()) is not None]
    if errors:
        raise errors[0]
    return [future.result() for future in futures]


class KafkaCluster:
    """`size` Kafka nodes on 127.0.0.1; `ports` (broker, controller) per node, else the +100 rule.

    Fault tests kill, stop and start single nodes through `nodes[j]`.
    """

    def __init__(
        self,
        size: int = 3,
        *,
        port: int = 9092,
        controller_port: int = 9093,
        ports: Sequence[tuple[int, int]] | None = None,
        data_dir: Path = REPO_ROOT / "var/kafka",
        run_dir: Path = REPO_ROOT / "var/run",
        log_dir: Path = REPO_ROOT / "var/log",
        partitions: int = 6,
        detach: bool = True,
        security: KafkaSecurity | None = None,
    ) -> None:
        if size < 1:
            raise ValueError(f"a cluster needs at least one node, not {size}")
        if ports is None:
            ports = [(port + PORT_STEP * j, controller_port + PORT_STEP * j) for j in range(size)]
        if len(ports) != size:
            raise ValueError(f"{len(ports)} port pairs for {size} nodes")
        quorum = [controller for _, controller in ports] if size > 1 else None
        self.partitions = partitions
        self.nodes: list[KafkaRuntime] = [
            KafkaRuntime(
                port=broker_port,
                controller_port=controller,
                data_dir=node_data_dir(Path(data_dir), j),
                run_dir=run_dir,
                log_file=Path(log_dir) / f"{node_name(j)}.log",
                partitions=partitions,
                detach=detach,
                node_id=j + 1,  # node 0 of the file names is node.id 1: Kafka ids start at 1 here
                name=node_name(j),
                quorum=quorum,
                security=security,
            )
            for j, (broker_port, controller) in enumerate(ports)
        ]

    @property
    def size(self) -> int:
        return len(self.nodes)

    @property
    def bootstrap_servers(self) -> str:
        """Every node's address, comma-separated (what KAFKA_BOOTSTRAP_SERVERS holds)."""
        return ",".join(node.bootstrap_servers for node in self.nodes)

    @property
    def client_config(self) -> dict[str, str]:
        """librdkafka settings a client needs beyond bootstrap.servers (SASL_SSL: login, CA)."""
        return self.nodes[0].client_config

    @property
    def replication(self) -> Replication:
        return topics.replication_for(self.size)

    # -- state ---------------------------------------------------------------------------

    def pids(self) -> list[int | None]:
        return [node.pid() for node in self.nodes]

    def is_running(self) -> bool:
        """True if every node runs."""
        return all(pid is not None for pid in self.pids())

    def brokers(self) -> set[int]:
        """node.ids of the brokers the cluster lists now (registered and not fenced)."""
        running = [node for node in self.nodes if node.is_running()]
        if not running:
            return set()
        bootstrap = ",".join(node.bootstrap_servers for node in running)
        try:
            admin = topics.admin_client(bootstrap, self.client_config)
            return set(admin.list_topics(timeout=5).brokers)
        except KafkaException:
            return set()

    # -- lifecycle -----------------------------------------------------------------------

    def _format_if_needed(self) -> None:
        """Format every node for one cluster id and one voter set, unless all are formatted."""
        for node in self.nodes:
            node.check_formatted_quorum()  # e.g. a single node's data, now asked for 3 nodes
        formatted = [node.is_formatted() for node in self.nodes]
        if all(formatted) or self.size == 1:  # one node formats itself (--standalone)
            return
        if any(formatted):
            done = ", ".join(
                str(n.data_dir) for n, f in zip(self.nodes, formatted, strict=True) if f
            )
            raise KafkaRuntimeError(
                f"only some nodes of the cluster are formatted ({done}): the voters are formatted "
                f"together; remove the data of every node (make kafka-clean) and start again"
            )
        cluster_id = kafka_uuid()
        voters = ",".join(
            f"{node.node_id}@127.0.0.1:{node.controller_port}:{kafka_uuid()}" for node in self.nodes
        )
        try:
            _in_parallel(
                lambda n: n.format(cluster_id, ["--initial-controllers", voters]), self.nodes
            )
        except KafkaRuntimeError:
            for node in self.nodes:  # all or nothing: a half-formatted cluster cannot start
                shutil.rmtree(node.log_dirs, ignore_errors=True)
            raise

    def start(self, timeout: float = 90.0) -> list[int]:
        """Start the nodes that are not running, all at once; wait until each serves; pids.

        A node that was running is left alone; if one fails, those started here are stopped.
        """
        if self.is_running():
            return [pid for pid in self.pids() if pid is not None]
        began = time.monotonic()
        check_java()
        stopped = [node for node in self.nodes if not node.is_running()]
        for node in stopped:
            node.check_ports()  # before any node starts: no half-started cluster to undo
        ensure_jars()
        self._format_if_needed()
        try:
            _in_parallel(lambda n: n.start(timeout), stopped)
            self._wait_for_brokers(began + timeout)
        except KafkaRuntimeError:
            _in_parallel(lambda n: n.stop(), stopped)
            raise
        if self.size > 1:
            log.info(
                "Kafka cluster of %d up at %s in %.1f s",
                self.size,
                self.bootstrap_servers,
                time.monotonic() - began,
            )
        return [pid for pid in self.pids() if pid is not None]

    def _wait_for_brokers(self, deadline: float) -> None:
        """Each node saw itself registered; wait until the metadata lists them all too."""
        wanted = {node.node_id for node in self.nodes}
        while (seen := self.brokers()) != wanted:
            if time.monotonic() > deadline:
                raise KafkaRuntimeError(
                    f"the cluster lists brokers {sorted(seen)}, not {sorted(wanted)}"
                )
            time.sleep(0.2)

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop every node cleanly, all at once; False if none was running.

        At once: a broker's clean shutdown waits for the quorum's approval, so stopping the
        nodes one after another would leave the last ones waiting for a quorum that is gone.
        """
        return any(_in_parallel(lambda n: n.stop(timeout), self.nodes))

    def clean(self) -> None:
        """Stop the nodes and remove their data."""
        self.stop()
        for node in self.nodes:
            shutil.rmtree(node.data_dir, ignore_errors=True)
            log.info("removed Kafka data in %s", node.data_dir)

    # -- topics --------------------------------------------------------------------------

    def topics(self) -> dict[str, int]:
        """Topic name -> partition count, internal topics left out."""
        return topics.list_topics(self.bootstrap_servers, self.client_config)

    def describe_topics(self) -> dict[str, TopicInfo]:
        return topics.describe_topics(self.bootstrap_servers, self.client_config)

    def create_topics(self, names: list[str] | None = None) -> list[str]:
        """Create the services' topics (TOPIC_NAMES) if missing, replicated for this cluster."""
        return topics.create_topics(
            self.bootstrap_servers,
            self.partitions,
            names,
            brokers=self.size,
            config=self.client_config,
        )

    def under_replicated(self, names: list[str] | None = None) -> dict[str, int]:
        """Topic -> partitions with fewer replicas in sync than assigned; -1 for a missing topic.

        Topics with every replica in sync are left out: {} means all is in sync.
        """
        admin = topics.admin_client(self.bootstrap_servers, self.client_config)
        metadata = admin.list_topics(timeout=10)
        lagging = {}
        for name in names or topics.TOPIC_NAMES:
            topic = metadata.topics.get(name)
            if topic is None:
                lagging[name] = -1
            elif count := sum(len(p.isrs) < len(p.replicas) for p in topic.partitions.values()):
                lagging[name] = count
        return lagging

    def wait_in_sync(self, names: list[str] | None = None, timeout: float = 60.0) -> None:
        """Wait until every partition of the topics has all its replicas in sync."""
        deadline = time.monotonic() + timeout
        while lagging := self.under_replicated(names):
            if time.monotonic() > deadline:
                raise KafkaRuntimeError(
                    f"partitions still under-replicated after {timeout} s: {lagging}"
                )
            time.sleep(0.2)
