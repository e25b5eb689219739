"""One service replica as a background process: its pid file, log, health, stop and kill.

Replica 0 of a service is named after it (`order`: var/run/order.pid, var/log/order.log);
replica i ≥ 1 appends `-i` (`order-1.pid`, `order-1.log`). Each replica gets its identity
in its consumer group from <SERVICE>_INSTANCE_ID (`order-0`, `order-1`, ...). In the split
layout a replica is two processes, each named and identified by its role (`order-0-api`,
`order-0-worker`) and started with <SERVICE>_ROLE (config).
"""

from __future__ import annotations

import os
import signal
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.stack.config import ROOT, Layout, ServiceSpec, process_name
from services.common.security.tls import TlsSettings, channel


class StartError(RuntimeError):
    """A service did not come up or a step failed; the message ends with the tail of its log."""


def is_serving(
    address: str,
    timeout_s: float = 1.0,
    tls: TlsSettings | None = None,
    service: str = "",
) -> bool:
    """True if the gRPC server at `address` answers a health check with SERVING.

    `service` names one of its health services ("" is the server as a whole).

    Over TLS when `tls` (default: PAYSAGA_TLS_* of this process) names a CA, with a client
    certificate if it names one.
    """
    try:
        with channel(address, tls) as chan:
            reply = health_pb2_grpc.HealthStub(chan).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=timeout_s
            )
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def replicas_found(run_dir: Path, service: str) -> dict[int, Layout]:
    """The replicas of `service` that left a pid file in `run_dir`, and their layout
    (`order.pid`, `order-1.pid`: "all"; `order-0-api.pid`, `order-0-worker.pid`: "split")."""
    found: dict[int, Layout] = {0: "all"} if (run_dir / f"{service}.pid").exists() else {}
    for path in run_dir.glob(f"{service}-*.pid"):
        index, _, role = path.stem.removeprefix(f"{service}-").partition("-")
        if not index.isdigit():
            continue
        if role in ("api", "worker"):
            found[int(index)] = "split"
        elif not role and int(index) > 0:
            found.setdefault(int(index), "all")
    return dict(sorted(found.items()))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child is not alive
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


@dataclass
class ServiceProcess:
    """Replica `replica` of one service, with its pid file and log."""

    spec: ServiceSpec
    address: str
    env: Mapping[str, str] = field(default_factory=dict)
    run_dir: Path = ROOT / "var" / "run"
    log_dir: Path = ROOT / "var" / "log"
    replica: int = 0
    #: What this process runs (<SERVICE>_ROLE): "all", or "api" / "worker" of a split replica.
    role: str = "all"
    #: Its Prometheus endpoint (<SERVICE>_METRICS_ADDRESS; "0": off); None: the environment's.
    metrics_address: str | None = None
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def name(self) -> str:
        return process_name(self.spec.name, self.replica, self.role)

    @property
    def instance_id(self) -> str:
        """Its identity (consumer group, saga journal): `order-1`, or `order-1-worker`."""
        return f"{self.spec.name}-{self.replica}" if self.role == "all" else self.name

    @property
    def serves_api(self) -> bool:
        """Whether it serves the public API (a worker process serves health and admin only)."""
        return self.role != "worker"

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.name}.log"

    def pid(self) -> int | None:
        """The pid of the running process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if self._proc is not None and self._proc.pid == pid:
            self._proc.poll()  # reap our own child, so a crashed one is not a zombie
        if _pid_alive(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def process_env(self) -> dict[str, str]:
        """The environment the service runs with: ours, `env`, its address and identity."""
        env = {**os.environ, **self.env}
        env[self.spec.address_env] = self.address
        env[self.spec.instance_env] = self.instance_id
        env[f"{self.spec.env_prefix}ROLE"] = self.role
        if self.metrics_address is not None:
            env[self.spec.metrics_env] = self.metrics_address
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "gen")])
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    def client_tls(self) -> TlsSettings:
        """How a client reaches this replica: TLS if its environment names a CA."""
        env = self.process_env()
        return TlsSettings(
            ca_file=env.get("PAYSAGA_TLS_CA_FILE", ""),
            client_cert_file=env.get("PAYSAGA_TLS_CLIENT_CERT_FILE", ""),
            client_key_file=env.get("PAYSAGA_TLS_CLIENT_KEY_FILE", ""),
        )

    def _command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", self.spec.module, *args]

    def start(self) -> None:
        """Start the process in the background (it keeps running after we exit)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                self._command(),
                cwd=ROOT,
                env=self.process_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")

    def run_step(self, command: str, timeout_s: float = 180.0) -> None:
        """Run `python -m <service> <command>` (migrate, seed) to its end, output in the log."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "ab") as log:
            done = subprocess.run(
                self._command(command),
                cwd=ROOT,
                env=self.process_env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout_s,
            )
        if done.returncode != 0:
            raise StartError(
                f"`python -m {self.spec.module} {command}` exited with {done.returncode}\n"
                f"{self.log_tail()}"
            )

    def wait_serving(self, timeout_s: float = 60.0) -> None:
        """Wait until the service reports SERVING; raise StartError if it dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if is_serving(self.address, tls=self.client_tls()):
                return
            if self.pid() is None:
                raise StartError(f"{self.name} exited during start-up\n{self.log_tail()}")
            time.sleep(0.2)
        raise StartError(f"{self.name} not SERVING after {timeout_s:.0f}s\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def signal(self, sig: signal.Signals) -> int | None:
        """Send `sig` to the process if it runs; its pid, or None."""
        pid = self.pid()
        if pid is not None:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                return None
        return pid

    def wait_exit(self, pid: int, timeout_s: float) -> bool:
        """Wait until `pid` (this replica's process) has exited; True if it did."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                self._proc.poll()
            if not _pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                return True
            time.sleep(0.05)
        return False

    def exit_status(self, timeout_s: float = 5.0) -> int | None:
        """The exit status of the process start() started, once it has ended (negative: the
        signal that ended it); None if it was not started here or still runs."""
        if self._proc is None:
            return None
        try:
            return self._proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it is still there after timeout_s."""
        pid = self.signal(signal.SIGTERM)
        if pid is not None and not self.wait_exit(pid, timeout_s):
            self.kill()

    def kill(self) -> None:
        """SIGKILL: a crash, for fault-injection tests."""
        pid = self.signal(signal.SIGKILL)
        if pid is not None:
            self.wait_exit(pid, 5.0)


@dataclass
class ConsoleProcess(ServiceProcess):
    """The web console (`python -m services.console`, PAYSAGA_CONSOLE_ADDRESS), pointed at
    every replica of both services; ready once /healthz answers."""

    #: Every replica's address of each service.
    order_addresses: list[str] = field(default_factory=list)
    payment_addresses: list[str] = field(default_factory=list)
    #: Whether it serves HTTPS, and the CA to verify it with; None/"": from its environment.
    https: bool | None = None
    ca_file: str = ""

    @property
    def instance_id(self) -> str:
        return "console"

    def process_env(self) -> dict[str, str]:
        env = {**os.environ, **self.env}
        env["PAYSAGA_CONSOLE_ADDRESS"] = self.address
        env["PAYSAGA_ORDER_ADDRESSES"] = ",".join(self.order_addresses)
        env["PAYSAGA_PAYMENT_ADDRESSES"] = ",".join(self.payment_addresses)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "gen")])
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    @property
    def url(self) -> str:
        https = self.https
        if https is None:
            https = bool(self.process_env().get("PAYSAGA_TLS_CERT_FILE"))
        return f"{'https' if https else 'http'}://{self.address}/"

    def answers(self, timeout_s: float = 1.0) -> bool:
        """True if the console answers /healthz (over TLS, verified with PAYSAGA_TLS_CA_FILE)."""
        ca_file = self.ca_file or self.process_env().get("PAYSAGA_TLS_CA_FILE") or None
        https = self.url.startswith("https")
        context = ssl.create_default_context(cafile=ca_file) if https else None
        try:
            with urllib.request.urlopen(self.url + "healthz", timeout=timeout_s, context=context):
                return True
        except OSError:
            return False

    def wait_serving(self, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.answers():
                return
            if self.pid() is None:
                raise StartError(f"{self.name} exited during start-up\n{self.log_tail()}")
            time.sleep(0.2)
        raise StartError(f"{self.name} not answering after {timeout_s:.0f}s\n{self.log_tail()}")


def stop_all(processes: Iterable[ServiceProcess], timeout_s: float = 20.0) -> None:
    """SIGTERM every process at once (graceful), SIGKILL those left after timeout_s; the
    worker processes of split replicas once the others are gone, so their relays publish
    what the api processes committed last."""
    processes = list(processes)
    for wave in (
        [p for p in processes if p.serves_api],
        [p for p in processes if not p.serves_api],
    ):
        stopping = [(proc, proc.signal(signal.SIGTERM)) for proc in wave]
        for proc, pid in stopping:
            if pid is not None and not proc.wait_exit(pid, timeout_s):
                proc.kill()
