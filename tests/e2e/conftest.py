"""The real services as separate processes on a private broker, and the real grpcurl binary."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from deploy.kafka.runtime import KafkaRuntime
from deploy.stack import ROOT, SERVICES, ServiceProcess
from tests.support import free_port


def require_tool(name: str, path: Path) -> str:
    """The tool's path; in CI a missing tool fails the run, elsewhere it skips loudly."""
    found = str(path) if path.exists() else shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed: run `make tools` (it installs pinned {name} into {path})"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(f"SKIPPED LOUDLY: {message}")


@dataclass
class Grpcurl:
    """Runs grpcurl against one address, as a user would type it."""

    binary: str
    address: str

    def run(
        self, method: str, body: dict[str, object] | None = None
    ) -> subprocess.CompletedProcess[str]:
        args = [self.binary, "-plaintext"]
        if body is not None:
            args += ["-d", json.dumps(body)]
        return subprocess.run(
            [*args, self.address, method], capture_output=True, text=True, timeout=30
        )

    def call(self, method: str, body: dict[str, object]) -> dict[str, object]:
        """Call and parse the JSON reply; fail with grpcurl's own message otherwise."""
        done = self.run(method, body)
        assert done.returncode == 0, f"grpcurl {method} failed: {done.stderr}"
        return json.loads(done.stdout)


@dataclass
class Stack:
    broker: KafkaRuntime
    processes: dict[str, ServiceProcess]
    order: Grpcurl
    payment: Grpcurl


@pytest.fixture(scope="session")
def grpcurl_binary() -> str:
    return require_tool("grpcurl", ROOT / ".tools" / "bin" / "grpcurl")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, grpcurl_binary: str) -> Iterator[Stack]:
    """Kafka, the Order service and the Payment service, each its own process."""
    home = tmp_path_factory.mktemp("stack")
    broker = KafkaRuntime(
        port=free_port(),
        controller_port=free_port(),
        data_dir=home / "kafka",
        run_dir=home / "run",
        log_file=home / "log" / "kafka.log",
        detach=False,
    )
    broker.start()
    broker.create_topics()
    env = {
        "KAFKA_BOOTSTRAP_SERVERS": broker.bootstrap_servers,
        "ORDER_DATABASE_URL": f"sqlite:///{home}/order.db",
        "PAYMENT_DATABASE_URL": f"sqlite:///{home}/payment.db",
    }
    processes = {
        spec.name: ServiceProcess(
            spec, f"127.0.0.1:{free_port()}", env, run_dir=home / "run", log_dir=home / "log"
        )
        for spec in SERVICES
    }
    try:
        for proc in processes.values():
            proc.start()
        for proc in processes.values():
            proc.wait_serving()
        yield Stack(
            broker,
            processes,
            Grpcurl(grpcurl_binary, processes["order"].address),
            Grpcurl(grpcurl_binary, processes["payment"].address),
        )
    finally:
        for proc in processes.values():
            proc.stop()
        broker.stop()
