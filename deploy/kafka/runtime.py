"""One real Apache Kafka (KRaft) node: format once, start, stop, kill, restart.

A node runs alone (its own one-voter quorum, the laptop default) or as one voter of a small
cluster on this machine (deploy/kafka/cluster.py formats and starts those together).
"""

from __future__ import annotations

import base64
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from string import Template

from confluent_kafka import KafkaException

from deploy.kafka import topics
from deploy.kafka.install import (
    KAFKA_DIR,
    KAFKA_VERSION,
    REPO_ROOT,
    KafkaRuntimeError,
    PortInUseError,
    check_java,
    ensure_jars,
    java_command,
    port_in_use,
)
from deploy.kafka.security import KafkaSecurity

__all__ = ["KafkaRuntime", "KafkaRuntimeError", "PortInUseError", "kafka_uuid"]

log = logging.getLogger(__name__)


def kafka_uuid() -> str:
    """A random id as `kafka-storage random-uuid` prints it (base64url, no padding), minus a JVM.

    Like Kafka's Uuid.randomUuid, never one starting with `-` (it would read as a flag).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not text.startswith("-"):
            return text


class KafkaRuntime:
    """One Kafka broker+controller on 127.0.0.1 with its data, pid file and log in given places.

    `quorum` lists the controller ports of every voter, node.id 1 first, when this node is one
    voter of a cluster (node_id then says which); None: the node is its own quorum.
    """

    def __init__(
        self,
        port: int = 9092,
        controller_port: int = 9093,
        data_dir: Path = REPO_ROOT / "var/kafka",
        run_dir: Path = REPO_ROOT / "var/run",
        log_file: Path = REPO_ROOT / "var/log/kafka.log",
        partitions: int = 6,
        detach: bool = True,
        *,
        node_id: int = 1,
        name: str = "kafka",
        quorum: Sequence[int] | None = None,
        security: KafkaSecurity | None = None,
    ) -> None:
        #: None: a PLAINTEXT client listener; else SASL_SSL (SCRAM-SHA-512) with these secrets.
        self.security = security
        self.quorum = list(quorum) if quorum is not None else [controller_port]
        if not 1 <= node_id <= len(self.quorum) or self.quorum[node_id - 1] != controller_port:
            raise ValueError(
                f"node.id {node_id} with controller port {controller_port} is not "
                f"a voter of the quorum on controller ports {self.quorum}"
            )
        self.node_id = node_id
        self.name = name  # names the pid file
        self.port = port
        self.controller_port = controller_port
        self.data_dir = Path(data_dir).resolve()
        self.run_dir = Path(run_dir).resolve()
        self.log_file = Path(log_file).resolve()
        self.partitions = partitions
        self.detach = detach  # own session: a detached broker outlives the command that started it
        self._proc: subprocess.Popen[bytes] | None = None
        self._proc_command = ""

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def client_config(self) -> dict[str, str]:
        """librdkafka settings a client of this broker needs beyond bootstrap.servers."""
        return self.security.client_config() if self.security else {}

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def quorum_servers(self) -> str:
        """controller.quorum.bootstrap.servers: every voter's controller address."""
        return ",".join(f"127.0.0.1:{port}" for port in self.quorum)

    @property
    def standalone(self) -> bool:
        return len(self.quorum) == 1

    @property
    def label(self) -> str:
        """How logs and errors name this node."""
        return "Kafka" if self.standalone else f"Kafka node.id {self.node_id}"

    @property
    def config_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "kraft-combined-logs"

    # -- state ---------------------------------------------------------------------------

    def pid(self) -> int | None:
        """Pid of this runtime's live broker, else None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        args = self._command_line(pid)
        if args is not None and str(self.config_file) in args:
            return pid
        if args is None or "kafka.Kafka" not in args:  # gone, or the pid now names another program
            self.pid_file.unlink(missing_ok=True)
        return None  # (or the broker of another data folder: its pid file is left alone)

    def is_running(self) -> bool:
        return self.pid() is not None

    def _command_line(self, pid: int) -> str | None:
        """The command line of a live process (not a zombie), None if there is none."""
        if self._proc is not None and self._proc.pid == pid:  # our child: poll() also reaps it
            return self._proc_command if self._proc.poll() is None else None
        ps = subprocess.run(
            ["ps", "-ww", "-o", "stat=,args=", "-p", str(pid)], capture_output=True, text=True
        )
        stat, _, args = ps.stdout.strip().partition(" ")
        return args if ps.returncode == 0 and not stat.startswith("Z") else None

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return f"(no log at {self.log_file})"

    # -- lifecycle -----------------------------------------------------------------------

    def _java(self, main: str, *args: str, broker: bool = False) -> list[str]:
        return java_command(
            main, *args, log_file=self.log_file, broker=broker, cluster_nodes=len(self.quorum)
        )

    def _write_config(self) -> None:
        template = Template((KAFKA_DIR / "server.properties.in").read_text())
        replication = topics.replication_for(len(self.quorum))
        values = dict(
            node_id=self.node_id,
            quorum=self.quorum_servers,
            port=self.port,
            controller_port=self.controller_port,
            partitions=self.partitions,
            replication=replication.factor,
            min_insync=replication.min_insync,
            listener="SASL_SSL" if self.security else "PLAINTEXT",
            security=self.security.server_properties() if self.security else "",
        )
        self.config_file.write_text(template.substitute(values, log_dirs=self.log_dirs))

    def is_formatted(self) -> bool:
        return (self.log_dirs / "meta.properties").exists()

    def format_if_needed(self) -> bool:
        """Format a node that runs alone once (--standalone); True if it was formatted now."""
        if self.is_formatted():
            return False
        if not self.standalone:
            raise KafkaRuntimeError(
                f"{self.data_dir} is not formatted: the nodes of a cluster are formatted together "
                f"(start the whole cluster, e.g. `make kafka-up BROKERS={len(self.quorum)}`)"
            )
        self.format(kafka_uuid(), ["--standalone"])
        return True

    def format(self, cluster_id: str, quorum_args: list[str]) -> None:
        """Format this node's storage for cluster_id; quorum_args say how the quorum starts.

        `--standalone` (this node is the quorum) or `--initial-controllers
        1@127.0.0.1:PORT:DIRID,...`: every voter with its metadata directory id, the same
        list on every voter (the format tool gives this node the directory id listed for it).
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._write_config()
        scram = self.security.format_args() if self.security else []
        fmt = self._java(
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            *quorum_args,
            *scram,
            "-c",
            str(self.config_file),
        )
        run = subprocess.run(fmt, capture_output=True, text=True)
        if run.returncode != 0:
            raise KafkaRuntimeError(f"formatting {self.log_dirs} failed:\n{run.stdout}{run.stderr}")
        self.security_marker.write_text("sasl_ssl\n" if self.security else "plaintext\n")
        log.info("formatted Kafka storage in %s (cluster id %s)", self.log_dirs, cluster_id)

    def check_ports(self) -> None:
        for name, port in (("broker", self.port), ("controller", self.controller_port)):
            if port_in_use(port):
                raise PortInUseError(
                    f"{name} port 127.0.0.1:{port} is already in use by another process "
                    f"(not the broker of {self.pid_file}): stop that process or choose another "
                    f"port (KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
                )

    @property
    def security_marker(self) -> Path:
        """Records the listener the storage was formatted for (SCRAM users exist or not)."""
        return self.data_dir / "security"

    def check_formatted_security(self) -> None:
        """SCRAM users are written at format time: a plaintext node cannot become SASL_SSL."""
        if not self.is_formatted() or not self.security:
            return
        found = self.security_marker.read_text().strip() if self.security_marker.exists() else ""
        if found != "sasl_ssl":
            raise KafkaRuntimeError(
                f"{self.data_dir} was formatted without the SASL_SSL users: remove the data "
                "(make kafka-clean) and start again with KAFKA_SECURITY=sasl_ssl"
            )

    def check_formatted_quorum(self) -> None:
        """Formatting recorded the voters (ids, controller addresses): they cannot change."""
        if not self.is_formatted() or not self.config_file.exists():
            return
        lines = self.config_file.read_text().splitlines()
        wanted = [
            f"node.id={self.node_id}",
            f"controller.quorum.bootstrap.servers={self.quorum_servers}",
        ]
        if not all(line in lines for line in wanted):
            raise KafkaRuntimeError(
                f"{self.data_dir} was formatted for another quorum (node.id, controller ports or "
                f"number of brokers): start it as in {self.config_file} (KAFKA_CONTROLLER_PORT, "
                f"BROKERS), or remove the data (make kafka-clean)"
            )

    def start(self, timeout: float = 90.0) -> int:
        """Start the broker (a no-op if already running), wait until it answers; return its pid.

        A cluster node answers once a majority of the voters runs: start the others meanwhile.
        """
        if (pid := self.pid()) is not None:
            log.info("%s already running at %s (pid %d)", self.label, self.bootstrap_servers, pid)
            return pid
        check_java()
        self.check_ports()
        ensure_jars()
        self.check_formatted_quorum()
        self.check_formatted_security()
        self.format_if_needed()
        self._write_config()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        began = time.monotonic()
        with self.log_file.open("ab") as out:  # JVM errors before log4j starts land here too
            command = self._java("kafka.Kafka", str(self.config_file), broker=True)
            self._proc_command = " ".join(command)
            self._proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=self.detach,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")
        try:
            self._wait_ready(began + timeout)
        except KafkaRuntimeError:
            self.stop()
            raise
        log.info(
            "%s (%s) up at %s (pid %d) in %.1f s",
            self.label,
            KAFKA_VERSION,
            self.bootstrap_servers,
            self._proc.pid,
            time.monotonic() - began,
        )
        return self._proc.pid

    def _wait_ready(self, deadline: float) -> None:
        """Ready = the listener accepts and a metadata request lists this node as a broker.

        A broker is listed once the quorum's leader registered (unfenced) it.
        """
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise KafkaRuntimeError(
                    f"{self.label} exited with code {self._proc.returncode} while starting; "
                    f"last lines of {self.log_file}:\n{self.log_tail()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                admin = topics.admin_client(self.bootstrap_servers, self.client_config)
                if self.node_id in admin.list_topics(timeout=2).brokers:
                    return
            except (OSError, KafkaException):
                pass
            time.sleep(0.2)
        raise KafkaRuntimeError(
            f"{self.label} did not answer on {self.bootstrap_servers} in time; "
            f"last lines of {self.log_file}:\n{self.log_tail()}"
        )

    def _signal_and_wait(self, sig: signal.Signals, timeout: float) -> bool:
        """Send sig to the broker and wait for it to exit; True if it did."""
        pid = self.pid()
        if pid is None:
            return True
        os.kill(pid, sig)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._command_line(pid) is None:
                return True
            time.sleep(0.1)
        return False

    def stop(self, timeout: float = 60.0) -> bool:
        """Stop cleanly (SIGTERM, wait; SIGKILL as a last resort); False if it was not running."""
        pid = self.pid()
        if pid is None:
            return False
        began = time.monotonic()
        if self._signal_and_wait(signal.SIGTERM, timeout):
            log.info("%s stopped (pid %d) in %.1f s", self.label, pid, time.monotonic() - began)
        else:
            log.warning(
                "%s (pid %d) ignored SIGTERM for %.0f s: killing it", self.label, pid, timeout
            )
            self._signal_and_wait(signal.SIGKILL, 10)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL the broker at once, as a crash would (for fault-injection tests)."""
        pid = self.pid()
        if pid is None:
            return False
        if not self._signal_and_wait(signal.SIGKILL, 10):
            raise KafkaRuntimeError(f"{self.label} (pid {pid}) survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        log.info("%s killed (pid %d)", self.label, pid)
        return True

    def clean(self) -> None:
        """Stop the broker if it runs and remove its data."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        log.info("removed Kafka data in %s", self.data_dir)

    # -- topics --------------------------------------------------------------------------

    def topics(self) -> dict[str, int]:
        """Topic name -> partition count on this broker, internal topics left out."""
        return topics.list_topics(self.bootstrap_servers, self.client_config)

    def create_topics(self, names: list[str] | None = None) -> list[str]:
        """Create the services' topics (TOPIC_NAMES) if missing; return those created."""
        return topics.create_topics(
            self.bootstrap_servers,
            self.partitions,
            names,
            brokers=len(self.quorum),
            config=self.client_config,
        )
