"""Runs a gRPC service process: servicers, health, reflection, background workers, graceful stop.

Health reports SERVING only while the database and Kafka both answer; it is re-checked
every few seconds. On SIGTERM/SIGINT the server stops taking calls, lets in-flight ones
finish, then the workers stop in reverse order (consumer commits, relay flushes).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from services.common.grpc_errors import UnexpectedErrors

log = logging.getLogger(__name__)


class Worker(Protocol):
    """A background part of the service (the consumer, the relay, a group committer)."""

    def start(self) -> None: ...

    def stop(self, timeout_s: float = ...) -> None: ...

    def is_alive(self) -> bool: ...


class AddressInUse(RuntimeError):
    """The gRPC address could not be bound."""


class GrpcApp:
    """One service process: a gRPC server plus the workers it starts and stops."""

    def __init__(
        self,
        *,
        address: str,
        service_names: Sequence[str],
        register: Callable[[grpc.Server], None],
        workers: Sequence[Worker],
        readiness_checks: Sequence[Callable[[], None]],
        status_checks: Mapping[str, Callable[[], str | None]] | None = None,
        max_workers: int = 64,
        max_request_bytes: int = 64 * 1024,
        grace_s: float = 10.0,
        drain_s: float = 1.0,
    ) -> None:
        self.service_names = list(service_names)
        self.workers = list(workers)
        self.readiness_checks = list(readiness_checks)
        #: Health names of parts that can need an operator while the service still serves
        #: (e.g. the outbox with parked rows): NOT_SERVING under their own name, with the
        #: problem logged, never under "" or the service's name.
        self.status_checks = dict(status_checks or {})
        self._problems: dict[str, str | None] = {}
        self.grace_s = grace_s
        self.drain_s = drain_s
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
            options=[
                ("grpc.max_receive_message_length", max_request_bytes),
                # gRPC turns SO_REUSEPORT on by default: two processes could then share one
                # port (and one SQLite file). A second copy must be refused instead.
                ("grpc.so_reuseport", 0),
            ],
            interceptors=[UnexpectedErrors()],
        )
        register(self.server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        reflection.enable_server_reflection(
            [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], self.server
        )
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        for name in self.status_checks:
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        try:
            self.port = self.server.add_insecure_port(address)
        except RuntimeError as exc:
            raise AddressInUse(f"cannot listen on {address}: {exc}") from exc
        if self.port == 0:
            raise AddressInUse(f"cannot listen on {address}: address already in use?")
        self.host = address.rsplit(":", 1)[0]
        self._stop = threading.Event()
        self._stopped = threading.Event()
        #: The process's exit status once stopped: 1 after a worker died.
        self.exit_code = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _set_health(self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType) -> None:
        for name in ["", *self.service_names]:
            self.health.set(name, status)

    def start(self) -> None:
        self.server.start()
        for worker in self.workers:
            worker.start()
        threading.Thread(target=self._watch_readiness, name="readiness", daemon=True).start()
        log.info("gRPC server listening", extra={"address": self.address})

    def _watch_readiness(self) -> None:
        serving: bool | None = None
        while not self._stop.is_set():
            if not all(worker.is_alive() for worker in self.workers):
                # A worker never stops by itself: whatever stopped it will not heal here.
                log.critical("a worker stopped unexpectedly; exiting so the service restarts")
                self.exit_code = 1
                threading.Thread(target=self.stop, name="stop").start()
                return
            try:
                for check in self.readiness_checks:
                    check()
                ready, reason = True, ""
            except Exception as exc:
                ready, reason = False, str(exc)
            self._check_status()
            if ready != serving:
                serving = ready
                self._set_health(
                    health_pb2.HealthCheckResponse.SERVING
                    if ready
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                log.info("health changed", extra={"serving": ready, "reason": reason})
            self._stop.wait(5.0 if ready else 0.5)

    def _check_status(self) -> None:
        for name, check in self.status_checks.items():
            try:
                problem = check()
            except Exception as exc:
                problem = f"status check failed: {exc}"
            if problem != self._problems.get(name):
                self._problems[name] = problem
                status = (
                    health_pb2.HealthCheckResponse.NOT_SERVING
                    if problem
                    else health_pb2.HealthCheckResponse.SERVING
                )
                self.health.set(name, status)
                log.log(
                    logging.WARNING if problem else logging.INFO,
                    "status changed",
                    extra={"part": name, "problem": problem or ""},
                )

    def stop(self) -> None:
        """Stop taking calls, finish in-flight ones, then stop the workers in reverse."""
        if self._stop.is_set():
            return
        self._stop.set()
        log.info("shutting down", extra={"grace_s": self.grace_s})
        # NOT_SERVING first, then a pause: load balancers stop sending here before calls
        # that were not started yet are refused (grpcio answers those CANCELLED).
        self.health.enter_graceful_shutdown()
        time.sleep(self.drain_s)
        self.server.stop(self.grace_s).wait()
        for worker in reversed(self.workers):
            worker.stop()
        self._stopped.set()
        log.info("stopped")

    def run_until_signalled(self) -> int:
        """Start, serve until SIGTERM or SIGINT, stop gracefully; return the exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: threading.Thread(target=self.stop).start())
        self.start()
        while not self._stopped.wait(1.0):
            pass
        return self.exit_code
