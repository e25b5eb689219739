"""The real services as separate processes on a private stack (deploy.stack), and grpcurl."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import pytest

from deploy.kafka.install import KafkaRuntimeError
from deploy.stack.config import DEFAULT_LAYOUT, ROOT
from deploy.stack.processes import StartError, is_serving
from deploy.stack.stack import Stack
from services.order.__main__ import WATCH_HEALTH
from tests.support import wait_for

ORDER = "paysaga.v1.OrderService"
PAYMENT = "paysaga.v1.PaymentService"


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
    #: How to connect: plaintext, or e.g. ("-cacert", CA, "-H", "authorization: Bearer ...").
    options: tuple[str, ...] = ("-plaintext",)

    def run(
        self, method: str, body: dict[str, object] | None = None
    ) -> subprocess.CompletedProcess[str]:
        args = [self.binary, *self.options]
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


def wait_status(order: Grpcurl, order_id: str, timeout_s: float = 60.0) -> dict[str, object]:
    """GetOrder through grpcurl until the order is COMPLETED or FAILED."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = order.call(f"{ORDER}/GetOrder", {"order_id": order_id})["order"]
        assert isinstance(found, dict)
        if found["status"] in ("ORDER_STATUS_COMPLETED", "ORDER_STATUS_FAILED"):
            return found
        assert time.monotonic() < deadline, f"order {order_id} still {found['status']}"
        time.sleep(0.1)


@dataclass
class GrpcurlStack:
    """A running stack and grpcurl pointed at replica 0 of each service."""

    stack: Stack
    order: Grpcurl
    payment: Grpcurl

    def grpcurl(self, service: str, replica: int) -> Grpcurl:
        """grpcurl pointed at another replica."""
        return Grpcurl(self.order.binary, self.stack.address(service, replica))


@pytest.fixture(scope="session")
def grpcurl_binary() -> str:
    return require_tool("grpcurl", ROOT / ".tools" / "bin" / "grpcurl")


@contextmanager
def running(stack: Stack, grpcurl_binary: str) -> Iterator[GrpcurlStack]:
    """Start `stack` (a start-up failure says why), yield it with grpcurl, stop it after."""
    try:
        with stack:
            _wait_following(stack)
            yield GrpcurlStack(
                stack,
                Grpcurl(grpcurl_binary, stack.order_address),
                Grpcurl(grpcurl_binary, stack.payment_address),
            )
    except (StartError, KafkaRuntimeError) as exc:
        pytest.fail(f"the stack did not start: {exc}", pytrace=False)


class Paused:
    """Every process of one replica of a service, stopped with SIGSTOP (an api and a worker
    in the split layout: the service as a whole stops answering and consuming) until
    `resume()` or the end of the `with` block."""

    def __init__(self, stack: Stack, service: str, replica: int = 0) -> None:
        self.processes = [p for p in stack.processes[service] if p.replica == replica]
        self.pids: list[int] = []

    def __enter__(self) -> Paused:
        try:
            for proc in self.processes:
                pid = proc.pid()
                assert pid is not None, f"{proc.name} is not running"
                os.kill(pid, signal.SIGSTOP)
                self.pids.append(pid)
        except BaseException:
            self.resume()
            raise
        return self

    def resume(self) -> None:
        while self.pids:
            os.kill(self.pids.pop(), signal.SIGCONT)

    def __exit__(self, *_: object) -> None:
        self.resume()


def _wait_following(stack: Stack) -> None:
    """Wait until every Order process serving the API follows order changes: until then its
    WatchOrders answers UNAVAILABLE ("retry shortly"), which a test must not race."""
    for proc in stack.processes["order"]:
        if proc.serves_api:
            tls = proc.client_tls()
            following = partial(is_serving, proc.address, tls=tls, service=WATCH_HEALTH)
            wait_for(f"{proc.name} to follow order changes", following, 60)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, grpcurl_binary: str) -> Iterator[GrpcurlStack]:
    """Its own Kafka broker, both services on SQLite in `make up`'s default layout (an api and a
    worker process each)."""
    home = tmp_path_factory.mktemp("stack")
    stack = Stack(home, ports="free", detach=False, roles=DEFAULT_LAYOUT)
    with running(stack, grpcurl_binary) as started:
        yield started
