"""A real single-node Apache Kafka (KRaft) broker: format once, start, stop, kill, restart."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from string import Template

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient

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

__all__ = ["KafkaRuntime", "KafkaRuntimeError", "PortInUseError"]

log = logging.getLogger(__name__)


class KafkaRuntime:
    """One Kafka broker+controller on 127.0.0.1 with its data, pid file and log in given places."""

    def __init__(
        self,
        port: int = 9092,
        controller_port: int = 9093,
        data_dir: Path = REPO_ROOT / "var/kafka",
        run_dir: Path = REPO_ROOT / "var/run",
        log_file: Path = REPO_ROOT / "var/log/kafka.log",
        partitions: int = 6,
        detach: bool = True,
    ) -> None:
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
    def pid_file(self) -> Path:
        return self.run_dir / "kafka.pid"

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
        return java_command(main, *args, log_file=self.log_file, broker=broker)

    def _write_config(self) -> None:
        template = Template((KAFKA_DIR / "server.properties.in").read_text())
        values = dict(
            port=self.port, controller_port=self.controller_port, partitions=self.partitions
        )
        self.config_file.write_text(template.substitute(values, log_dirs=self.log_dirs))

    def format_if_needed(self) -> bool:
        """Format the storage once (KRaft, --standalone); True if it was formatted now."""
        if (self.log_dirs / "meta.properties").exists():
            return False
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        self._write_config()
        run = subprocess.run(
            self._java("kafka.tools.StorageTool", "random-uuid"), capture_output=True, text=True
        )
        cluster_id = run.stdout.strip().splitlines()[-1] if run.returncode == 0 else ""
        if not cluster_id:
            raise KafkaRuntimeError(f"kafka-storage random-uuid failed:\n{run.stderr}")
        fmt = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            f"--cluster-id={cluster_id}",
            "-c",
            str(self.config_file),
        )
        run = subprocess.run(fmt, capture_output=True, text=True)
        if run.returncode != 0:
            raise KafkaRuntimeError(f"formatting {self.log_dirs} failed:\n{run.stdout}{run.stderr}")
        log.info("formatted Kafka storage in %s (cluster id %s)", self.log_dirs, cluster_id)
        return True

    def _check_ports(self) -> None:
        for name, port in (("broker", self.port), ("controller", self.controller_port)):
            if port_in_use(port):
                raise PortInUseError(
                    f"{name} port 127.0.0.1:{port} is already in use by another process "
                    f"(not the broker of {self.pid_file}): stop that process or choose another "
                    f"port (KAFKA_PORT / KAFKA_CONTROLLER_PORT)"
                )

    def _check_formatted_controller(self) -> None:
        """--standalone recorded the controller address at format time: it cannot move."""
        if not self.config_file.exists():
            return
        wanted = f"controller.quorum.bootstrap.servers=127.0.0.1:{self.controller_port}"
        if wanted not in self.config_file.read_text().splitlines():
            raise KafkaRuntimeError(
                f"{self.data_dir} was formatted for another controller port: start with the "
                f"controller port in {self.config_file}, or remove the data (make kafka-clean)"
            )

    def start(self, timeout: float = 90.0) -> int:
        """Start the broker (a no-op if already running), wait until it answers; return its pid."""
        if (pid := self.pid()) is not None:
            log.info("Kafka already running at %s (pid %d)", self.bootstrap_servers, pid)
            return pid
        check_java()
        self._check_ports()
        ensure_jars()
        self._check_formatted_controller()
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
            "Kafka %s up at %s (pid %d) in %.1f s",
            KAFKA_VERSION,
            self.bootstrap_servers,
            self._proc.pid,
            time.monotonic() - began,
        )
        return self._proc.pid

    def _wait_ready(self, deadline: float) -> None:
        """Ready = the listener accepts and a metadata request answers with our broker."""
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise KafkaRuntimeError(
                    f"Kafka exited with code {self._proc.returncode} while starting; "
                    f"last lines of {self.log_file}:\n{self.log_tail()}"
                )
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                admin = AdminClient({"bootstrap.servers": self.bootstrap_servers})
                if admin.list_topics(timeout=2).brokers:
                    return
            except (OSError, KafkaException):
                pass
            time.sleep(0.2)
        raise KafkaRuntimeError(
            f"Kafka did not answer on {self.bootstrap_servers} in time; "
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
            log.info("Kafka stopped (pid %d) in %.1f s", pid, time.monotonic() - began)
        else:
            log.warning("Kafka (pid %d) ignored SIGTERM for %.0f s: killing it", pid, timeout)
            self._signal_and_wait(signal.SIGKILL, 10)
        self.pid_file.unlink(missing_ok=True)
        return True

    def kill(self) -> bool:
        """SIGKILL the broker at once, as a crash would (for fault-injection tests)."""
        pid = self.pid()
        if pid is None:
            return False
        if not self._signal_and_wait(signal.SIGKILL, 10):
            raise KafkaRuntimeError(f"Kafka (pid {pid}) survived SIGKILL")
        self.pid_file.unlink(missing_ok=True)
        log.info("Kafka killed (pid %d)", pid)
        return True

    def clean(self) -> None:
        """Stop the broker if it runs and remove its data."""
        self.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)
        log.info("removed Kafka data in %s", self.data_dir)

    # -- topics --------------------------------------------------------------------------

    def topics(self) -> dict[str, int]:
        """Topic name -> partition count on this broker, internal topics left out."""
        return topics.list_topics(self.bootstrap_servers)

    def create_topics(self, names: list[str] | None = None) -> list[str]:
        """Create the saga topics and their dead-letter topics if missing; return those created."""
        return topics.create_topics(self.bootstrap_servers, self.partitions, names)
