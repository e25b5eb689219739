"""The `Stack`: Kafka, the databases and N replicas of each service, started and stopped as one.

`make up`, the end-to-end and fault tests and the bench all run a `Stack`:

    with Stack(home, db="postgres", replicas=2, brokers=3, ports="free") as stack:
        stack.address("order", 1), stack.database_urls["payment"], stack.bootstrap

It starts what it was not given (a Kafka cluster of `brokers` nodes, the datastore of its
database kind), migrates both databases, seeds the demo data, starts every replica and
waits until each is SERVING; `stop()` stops what it started, in reverse. With
`roles="split"` each replica is an api and a worker process (config). Under `home`:
run/ (pid files), log/ (logs), and whatever it starts itself (kafka*/, postgres/, SQLite
files). The command line (`python -m deploy.stack up|down|ps|migrate|seed|check`) is in cli.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import TracebackType

from deploy.kafka.cluster import KafkaCluster
from deploy.kafka.runtime import KafkaRuntime
from deploy.postgres.runtime import PostgresRuntime
from deploy.stack.config import (
    LAYOUTS,
    ROLES_OF,
    SERVICES,
    WORKER_PORT_OFFSET,
    Layout,
    Ports,
    ServiceSpec,
    StackConfigError,
    free_ports,
    replica_address,
)
from deploy.stack.datastores import DATASTORES, DbKind
from deploy.stack.processes import ServiceProcess, is_serving, stop_all

__all__ = ["Stack", "check_layout", "check_roles"]


def check_layout(db: str, replicas: int, brokers: int = 1, roles: str = "all") -> None:
    """Raise StackConfigError unless `db`, `replicas`, `brokers` and `roles` make a stack
    that works."""
    datastore = DATASTORES.get(db)
    if datastore is None:
        raise StackConfigError(f"DB={db!r}: choose DB=sqlite or DB=postgres")
    check_roles(roles)
    if replicas < 1 or brokers < 1:
        raise StackConfigError(f"REPLICAS={replicas}, BROKERS={brokers}: both must be 1 or more")
    datastore.check_replicas(replicas)


def check_roles(roles: str) -> Layout:
    """`roles` as a Layout, or StackConfigError saying what to choose."""
    for layout in LAYOUTS:
        if roles == layout:
            return layout
    raise StackConfigError(
        f"ROLES={roles!r}: choose ROLES=all (one process per replica) or ROLES=split (an "
        "api and a worker process per replica)"
    )


class Stack:
    """Kafka, the two databases and `replicas` processes of each service.

    `kafka`: a running KafkaCluster/KafkaRuntime, or bootstrap servers, to use as they are;
    None starts a cluster of `brokers` nodes under `home`. `postgres` (DB=postgres): a
    running PostgresRuntime; None starts one under `home`. `databases` overrides the URLs
    (default: SQLite files in `home`, or the server's paysaga_order / paysaga_payment).
    `ports`: "default" = 50051/50052 (or ORDER_/PAYMENT_GRPC_ADDRESS) + 100·i, metrics
    9101/9102 (or ORDER_/PAYMENT_METRICS_ADDRESS) + 100·i, Kafka 9092; "free" = free ports
    chosen now. `metrics=False` switches the metrics off. `env` is added to every
    service's environment. `roles`: "all" runs each replica as one process, "split" as an
    api process (the replica's ports) and a worker process (those ports + 10).
    """

    def __init__(
        self,
        home: Path,
        *,
        db: DbKind = "sqlite",
        replicas: int = 1,
        brokers: int = 1,
        ports: Ports = "default",
        env: Mapping[str, str] | None = None,
        seed: bool = True,
        kafka: KafkaCluster | KafkaRuntime | str | None = None,
        postgres: PostgresRuntime | None = None,
        databases: Mapping[str, str] | None = None,
        detach: bool = True,
        metrics: bool = True,
        roles: Layout = "all",
    ) -> None:
        check_layout(db, replicas, brokers, roles)
        self.home = Path(home).resolve()
        self.db = db
        self.replicas = replicas
        self.roles = roles
        self.seed = seed
        self.run_dir = self.home / "run"
        self.log_dir = self.home / "log"
        self.own_kafka = kafka is None
        self.kafka = self._new_cluster(brokers, ports, detach) if kafka is None else kafka
        self.datastore = DATASTORES[db].for_stack(
            self.home,
            postgres=postgres,
            ports=ports,
            run_dir=self.run_dir,
            log_dir=self.log_dir,
            detach=detach,
        )
        self.postgres = self.datastore.postgres
        self.database_urls = dict(databases) if databases else self.datastore.urls()
        common = {"KAFKA_BOOTSTRAP_SERVERS": self.bootstrap, **(env or {})}
        #: Every process of each service, replica by replica (in the split layout each
        #: replica's api process, then its worker).
        self.processes: dict[str, list[ServiceProcess]] = {
            spec.name: self._new_processes(
                spec,
                ports,
                {**common, spec.database_env: self.database_urls[spec.name]},
                metrics=metrics,
            )
            for spec in SERVICES
        }

    def _new_cluster(self, brokers: int, ports: Ports, detach: bool) -> KafkaCluster:
        pairs = None
        if ports == "free":
            found = free_ports(2 * brokers)
            pairs = list(zip(found[0::2], found[1::2], strict=True))
        return KafkaCluster(
            brokers,
            ports=pairs,
            data_dir=self.home / "kafka",
            run_dir=self.run_dir,
            log_dir=self.log_dir,
            partitions=int(os.environ.get("KAFKA_PARTITIONS") or "6"),
            detach=detach,
        )

    def _addresses(self, spec: ServiceSpec, ports: Ports, role: str) -> list[str]:
        if ports == "free":
            return [f"127.0.0.1:{port}" for port in free_ports(self.replicas)]
        base = os.environ.get(spec.address_env) or spec.default_address
        offset = WORKER_PORT_OFFSET if role == "worker" else 0
        return [replica_address(base, i, offset=offset) for i in range(self.replicas)]

    def _metrics_addresses(self, spec: ServiceSpec, ports: Ports, role: str) -> list[str]:
        if ports == "free":
            return [f"127.0.0.1:{port}" for port in free_ports(self.replicas)]
        base = os.environ.get(spec.metrics_env, spec.default_metrics_address)
        offset = WORKER_PORT_OFFSET if role == "worker" else 0
        return [replica_address(base, i, offset=offset) for i in range(self.replicas)]

    def _new_processes(
        self, spec: ServiceSpec, ports: Ports, env: dict[str, str], *, metrics: bool
    ) -> list[ServiceProcess]:
        processes = [
            ServiceProcess(
                spec,
                address,
                env,
                run_dir=self.run_dir,
                log_dir=self.log_dir,
                replica=i,
                role=role,
                metrics_address=metrics_address if metrics else "0",
            )
            for role in ROLES_OF[self.roles]
            for i, (address, metrics_address) in enumerate(
                zip(
                    self._addresses(spec, ports, role),
                    self._metrics_addresses(spec, ports, role),
                    strict=True,
                )
            )
        ]
        return sorted(processes, key=lambda proc: proc.replica)  # stable: api, then worker

    def metrics_address(self, name: str, replica: int = 0) -> str:
        """Where replica `replica` of `name` serves /metrics (its api process in the split
        layout; "0": switched off)."""
        return self.process(name, replica).metrics_address or "0"

    # -- where things are ----------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """KAFKA_BOOTSTRAP_SERVERS: every node's address, comma-separated."""
        return self.kafka if isinstance(self.kafka, str) else self.kafka.bootstrap_servers

    def process(self, name: str, replica: int = 0, role: str = "") -> ServiceProcess:
        """Replica `replica`'s process of `role`; by default the one serving the public API."""
        for proc in self.processes[name]:
            if proc.replica == replica and (proc.role == role or not role and proc.serves_api):
                return proc
        raise KeyError(f"{name} has no replica {replica} of role {role or 'api'!r}")

    def all_processes(self) -> list[ServiceProcess]:
        """Every process of every service: order, order-1, ..., payment, payment-1, ...
        (order-0-api, order-0-worker, ... in the split layout)."""
        return [proc for spec in SERVICES for proc in self.processes[spec.name]]

    def address(self, name: str, replica: int = 0) -> str:
        """Where replica `replica` of `name` serves the public API."""
        return self.process(name, replica).address

    def addresses(self, name: str) -> list[str]:
        """Every replica's public API address of one service, replica 0 first."""
        return [proc.address for proc in self.processes[name] if proc.serves_api]

    def admin_addresses(self, name: str) -> list[str]:
        """Every process's address of one service, those serving the public API first: all
        of them answer the admin API (`paysaga status` sees each)."""
        ordered = sorted(self.processes[name], key=lambda proc: not proc.serves_api)
        return [proc.address for proc in ordered]

    @property
    def order_address(self) -> str:
        return self.address("order")

    @property
    def payment_address(self) -> str:
        return self.address("payment")

    def pids(self) -> dict[str, int]:
        """Pid of each running process by name: replicas, Kafka nodes, PostgreSQL."""
        found = {proc.name: proc.pid() for proc in self.all_processes()}
        if isinstance(self.kafka, KafkaCluster):
            found |= {node.name: node.pid() for node in self.kafka.nodes}
        elif isinstance(self.kafka, KafkaRuntime):
            found[self.kafka.name] = self.kafka.pid()
        found |= self.datastore.pids()
        return {name: pid for name, pid in found.items() if pid is not None}

    # -- life ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start what is not running yet; return once every replica is SERVING."""
        if self.own_kafka:
            assert isinstance(self.kafka, KafkaCluster)
            self.kafka.start()
            self.kafka.create_topics()
        self.datastore.start()
        self.prepare(seed=self.seed)
        self.start_services()

    def prepare(self, *, seed: bool) -> None:
        """Migrate both databases (and load the demo data): the steps before any replica runs."""
        firsts = [self.process(spec.name) for spec in SERVICES]
        with ThreadPoolExecutor(len(firsts)) as pool:
            for step in ["migrate", "seed"] if seed else ["migrate"]:
                list(pool.map(ServiceProcess.run_step, firsts, [step] * len(firsts)))

    def start_services(self) -> list[ServiceProcess]:
        """Start every replica that is not running, wait until all serve; those started."""
        started = [proc for proc in self.all_processes() if proc.pid() is None]
        for proc in started:
            proc.start()
        for proc in self.all_processes():
            proc.wait_serving()
        return started

    def stop_services(self, timeout_s: float = 20.0) -> None:
        """SIGTERM every replica at once (graceful), SIGKILL what is left after timeout_s."""
        stop_all(self.all_processes(), timeout_s)

    def stop(self) -> None:
        """Stop the replicas, then the Kafka and the database server this stack started."""
        self.stop_services()
        if self.own_kafka:
            assert isinstance(self.kafka, KafkaCluster)
            self.kafka.stop()
        self.datastore.stop()

    def kill(self, name: str, replica: int = 0, role: str = "") -> None:
        """kill -9 one replica (its process of `role`, see process())."""
        self.process(name, replica, role).kill()

    def restart(self, name: str, replica: int = 0, role: str = "") -> None:
        """Start one replica again (same port, same identity) and wait until it serves."""
        proc = self.process(name, replica, role)
        proc.start()
        proc.wait_serving()

    def serving(self) -> bool:
        return all(is_serving(proc.address, tls=proc.client_tls()) for proc in self.all_processes())

    def alive(self) -> bool:
        return all(proc.pid() is not None for proc in self.all_processes())

    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
