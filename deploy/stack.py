"""Runs the two services as background processes: `python -m deploy.stack up|down|ps`.

Each service gets a pid file (var/run/<name>.pid) and a log (var/log/<name>.log).
`up` starts only what is not running and waits until each reports SERVING on
grpc.health.v1; `down` stops with SIGTERM (graceful), then SIGKILL after a timeout.
The same ServiceProcess class runs the services in end-to-end and fault tests.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service: its module, the env var holding its address, its default."""

    name: str
    module: str
    address_env: str
    default_address: str


SERVICES = (
    ServiceSpec("order", "services.order", "ORDER_GRPC_ADDRESS", "127.0.0.1:50051"),
    ServiceSpec("payment", "services.payment", "PAYMENT_GRPC_ADDRESS", "127.0.0.1:50052"),
)


class StartError(RuntimeError):
    """A service did not come up; the message ends with the tail of its log."""


def is_serving(address: str, timeout_s: float = 1.0) -> bool:
    """True if the gRPC server at `address` answers a health check with SERVING."""
    try:
        with grpc.insecure_channel(address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=timeout_s
            )
    except grpc.RpcError:
        return False
    return reply.status == health_pb2.HealthCheckResponse.SERVING


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
    """One service process with its pid file and log."""

    spec: ServiceSpec
    address: str
    env: Mapping[str, str] = field(default_factory=dict)
    run_dir: Path = ROOT / "var" / "run"
    log_dir: Path = ROOT / "var" / "log"
    _proc: subprocess.Popen[bytes] | None = None

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.spec.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.spec.name}.log"

    def pid(self) -> int | None:
        """The pid of the running process, or None (a stale pid file is removed)."""
        try:
            pid = int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None
        if _pid_alive(pid):
            return pid
        self.pid_file.unlink(missing_ok=True)
        return None

    def start(self) -> None:
        """Start the process in the background (it keeps running after we exit)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, self.spec.address_env: self.address}
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), str(ROOT / "gen")])
        env.setdefault("PYTHONUNBUFFERED", "1")
        with open(self.log_file, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", self.spec.module],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{self._proc.pid}\n")

    def wait_serving(self, timeout_s: float = 60.0) -> None:
        """Wait until the service reports SERVING; raise StartError if it dies or times out."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if is_serving(self.address):
                return
            if self.pid() is None:
                raise StartError(f"{self.spec.name} exited during start-up\n{self.log_tail()}")
            time.sleep(0.2)
        raise StartError(f"{self.spec.name} not SERVING after {timeout_s:.0f}s\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def _signal_and_wait(self, sig: signal.Signals, timeout_s: float) -> bool:
        pid = self.pid()
        if pid is None:
            return True
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.pid == pid:
                self._proc.poll()
            if not _pid_alive(pid):
                self.pid_file.unlink(missing_ok=True)
                return True
            time.sleep(0.05)
        return False

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM (graceful shutdown), then SIGKILL if it is still there after timeout_s."""
        if not self._signal_and_wait(signal.SIGTERM, timeout_s):
            self._signal_and_wait(signal.SIGKILL, 5.0)

    def kill(self) -> None:
        """SIGKILL: a crash, for fault-injection tests."""
        self._signal_and_wait(signal.SIGKILL, 5.0)


def default_processes() -> list[ServiceProcess]:
    return [ServiceProcess(s, os.environ.get(s.address_env, s.default_address)) for s in SERVICES]


def up() -> int:
    procs = default_processes()
    for proc in procs:
        if proc.pid() is not None:
            print(f"{proc.spec.name}: already running (pid {proc.pid()})")
            continue
        print(f"{proc.spec.name}: starting on {proc.address} (log {proc.log_file})")
        proc.start()
    for proc in procs:
        try:
            proc.wait_serving()
        except StartError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        print(f"{proc.spec.name}: SERVING on {proc.address}")
    return 0


def down() -> int:
    for proc in default_processes():
        if proc.pid() is None:
            print(f"{proc.spec.name}: not running")
            continue
        print(f"{proc.spec.name}: stopping (pid {proc.pid()})")
        proc.stop()
        print(f"{proc.spec.name}: stopped")
    return 0


def ps() -> int:
    for proc in default_processes():
        pid = proc.pid()
        if pid is None:
            state = "stopped"
        else:
            state = "SERVING" if is_serving(proc.address) else "running, not serving"
        print(f"{proc.spec.name:8} {state:22} pid={pid or '-':<8} {proc.address}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m deploy.stack", description=__doc__)
    parser.add_argument("command", choices=["up", "down", "ps"])
    return {"up": up, "down": down, "ps": ps}[parser.parse_args().command]()


if __name__ == "__main__":
    sys.exit(main())
