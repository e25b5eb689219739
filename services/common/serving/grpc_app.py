"""Runs a gRPC service process: an asyncio gRPC server, health, reflection, background
workers, graceful stop.

The server is `grpc.aio` on its own event-loop thread: an open stream costs memory, not a
thread. Servicer methods written as coroutines run on the loop; plain methods (short
database reads) run on a small thread pool, so they never wait behind streams.

Health names: "" and each service's name report readiness (SERVING while the readiness
checks pass: the service can answer its RPCs; re-checked every few seconds);
"paysaga.liveness" reports that the process and all its workers run (a probe that restarts
the process should use this one, never readiness); each status check (e.g.
"paysaga.kafka") reports one part that needs an operator while the service still serves.
With `health_address`, the same health names are also answered on a plaintext port that
serves nothing else: Kubernetes' gRPC probes speak no TLS (deploy/helm/paysaga).

On SIGTERM/SIGINT: NOT_SERVING first, a pause for load balancers (`drain_s`), the
`on_drain` hooks (which end watch streams with a status that says to reconnect elsewhere),
then the server refuses new calls and gives in-flight ones `grace_s` to finish, then the
workers stop in reverse order within `grace_s` (consumer commits, relay flushes).
"""

from __future__ import annotations

import asyncio
import gc
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

from services.common.observability.grpc_telemetry import AioServerTelemetry
from services.common.observability.stalls import StallWatch
from services.common.serving.grpc_errors import UnexpectedErrors

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
#: Health name of liveness: SERVING while the process and its workers run.
LIVENESS = "paysaga.liveness"


class Worker(Protocol):
    """A background part of the service (the consumer, the relay, a group committer)."""

    def start(self) -> None: ...

    def stop(self, timeout_s: float = ...) -> None: ...

    def is_alive(self) -> bool: ...


class AddressInUse(RuntimeError):
    """The gRPC address could not be bound."""


class GrpcApp:
    """One service process: an asyncio gRPC server plus the workers it starts and stops."""

    def __init__(
        self,
        *,
        address: str,
        service_names: Sequence[str],
        register: Callable[[grpc.aio.Server], None],
        workers: Sequence[Worker],
        readiness_checks: Sequence[Callable[[], None]],
        status_checks: Mapping[str, Callable[[], str | None]] | None = None,
        on_loop: Sequence[Callable[[asyncio.AbstractEventLoop], None]] = (),
        on_drain: Sequence[Callable[[], None]] = (),
        max_workers: int = 16,
        max_request_bytes: int = 64 * 1024,
        keepalive_s: float = 30.0,
        keepalive_timeout_s: float = 10.0,
        grace_s: float = 10.0,
        drain_s: float = 1.0,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
        credentials: grpc.ServerCredentials | None = None,
        reflection: bool = True,
        health_address: str = "",
    ) -> None:
        self.service_names = list(service_names)
        self.workers = list(workers)
        self.readiness_checks = list(readiness_checks)
        #: Health names of parts that can need an operator while the service still serves
        #: (e.g. the outbox with parked rows): NOT_SERVING under their own name, with the
        #: problem logged, never under "" or the service's name.
        self.status_checks = dict(status_checks or {})
        self.on_drain = list(on_drain)
        self._problems: dict[str, str | None] = {}
        self.grace_s = grace_s
        self.drain_s = drain_s
        self._loop = asyncio.new_event_loop()
        # Plain (non-coroutine) servicer methods and blocking checks run on this pool.
        self._pool = futures.ThreadPoolExecutor(max_workers, thread_name_prefix="grpc")
        self._loop.set_default_executor(self._pool)
        self.health = health.aio.HealthServicer()
        options = [
            ("grpc.max_receive_message_length", max_request_bytes),
            # gRPC turns SO_REUSEPORT on by default: two processes could then share one
            # port (and one SQLite file). A second copy must be refused instead.
            ("grpc.so_reuseport", 0),
            # Pings on idle connections, so the streams of a vanished client are reaped.
            ("grpc.keepalive_time_ms", int(keepalive_s * 1000)),
            ("grpc.keepalive_timeout_ms", int(keepalive_timeout_s * 1000)),
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.max_pings_without_data", 0),
            ("grpc.http2.min_ping_interval_without_data_ms", 5000),
            # Calls that arrive faster than the loop takes them wait in gRPC's queue, which
            # by default cancels them beyond 3,000: thousands of watchers reconnecting at
            # once (after another replica drained) must queue instead.
            ("grpc.server.max_pending_requests", 20_000),
            ("grpc.server.max_pending_requests_hard_limit", 40_000),
        ]
        self.server = self._loop.run_until_complete(
            self._build(register, options, list(interceptors), reflection)
        )
        for hook in on_loop:
            hook(self._loop)
        try:
            if credentials is None:
                self.port = self.server.add_insecure_port(address)
            else:
                self.port = self.server.add_secure_port(address, credentials)
        except RuntimeError as exc:
            raise AddressInUse(f"cannot listen on {address}: {exc}") from exc
        if self.port == 0:
            raise AddressInUse(f"cannot listen on {address}: address already in use?")
        #: The plaintext health-only server (None without `health_address`) and its port.
        self.health_server: grpc.aio.Server | None = None
        self.health_port = 0
        if health_address:
            self.health_server = self._loop.run_until_complete(self._build_health(health_address))
        self.host = address.rsplit(":", 1)[0]
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-loop")
        self._stalls = StallWatch(self._loop)
        self._stopping = False
        self._stopped = threading.Event()
        #: The process's exit status once stopped: 1 after a worker died.
        self.exit_code = 0

    async def _build(
        self,
        register: Callable[[grpc.aio.Server], None],
        options: list[tuple[str, int]],
        interceptors: list[grpc.aio.ServerInterceptor],
        with_reflection: bool,
    ) -> grpc.aio.Server:
        server = grpc.aio.server(
            migration_thread_pool=self._pool,
            options=options,
            # AioServerTelemetry outermost: it counts the status the client gets. Then
            # UnexpectedErrors: it also guards the ones after it.
            interceptors=[AioServerTelemetry(), UnexpectedErrors(), *interceptors],
        )
        register(server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        if with_reflection:
            reflection.enable_server_reflection(
                [*self.service_names, health.SERVICE_NAME, reflection.SERVICE_NAME], server
            )
        await self._set_health(NOT_SERVING)
        await self.health.set(LIVENESS, NOT_SERVING)
        for name in self.status_checks:
            await self.health.set(name, SERVING)
        return server

    async def _build_health(self, address: str) -> grpc.aio.Server:
        server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        try:
            self.health_port = server.add_insecure_port(address)
        except RuntimeError as exc:
            raise AddressInUse(f"cannot listen on {address} (health): {exc}") from exc
        if self.health_port == 0:
            raise AddressInUse(f"cannot listen on {address} (health): address already in use?")
        return server

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    async def _set_health(
        self, status: health_pb2.HealthCheckResponse.ServingStatus.ValueType
    ) -> None:
        for name in ["", *self.service_names]:
            await self.health.set(name, status)

    def start(self) -> None:
        self._thread.start()
        self._stalls.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result()
        if self.health_server is not None:
            asyncio.run_coroutine_threadsafe(self.health_server.start(), self._loop).result()
        for worker in self.workers:
            worker.start()
        asyncio.run_coroutine_threadsafe(self._watch_readiness(), self._loop)
        log.info("gRPC server listening", extra={"address": self.address})

    async def _watch_readiness(self) -> None:
        serving: bool | None = None
        await self.health.set(LIVENESS, SERVING)
        while not self._stopping:
            if not all(worker.is_alive() for worker in self.workers):
                # A worker never stops by itself: whatever stopped it will not heal here.
                await self.health.set(LIVENESS, NOT_SERVING)
                log.critical("a worker stopped unexpectedly; exiting so the service restarts")
                self.exit_code = 1
                threading.Thread(target=self.stop, name="stop").start()
                return
            try:
                for check in self.readiness_checks:
                    await self._loop.run_in_executor(None, check)
                ready, reason = True, ""
            except Exception as exc:
                ready, reason = False, str(exc)
            await self._check_status()
            if ready != serving:
                serving = ready
                await self._set_health(SERVING if ready else NOT_SERVING)
                log.info("health changed", extra={"serving": ready, "reason": reason})
            await asyncio.sleep(5.0 if ready else 0.5)

    async def _check_status(self) -> None:
        for name, check in self.status_checks.items():
            try:
                problem = await self._loop.run_in_executor(None, check)
            except Exception as exc:
                problem = f"status check failed: {exc}"
            if problem != self._problems.get(name):
                self._problems[name] = problem
                await self.health.set(name, NOT_SERVING if problem else SERVING)
                log.log(
                    logging.WARNING if problem else logging.INFO,
                    "status changed",
                    extra={"part": name, "problem": problem or ""},
                )

    def stop(self) -> None:
        """Drain, stop taking calls, finish in-flight ones, then stop the workers in reverse."""
        if self._stopping:
            return
        self._stopping = True
        self._stalls.stop()
        log.info("shutting down", extra={"grace_s": self.grace_s, "drain_s": self.drain_s})
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._drain(), self._loop).result()
        deadline = time.monotonic() + self.grace_s
        for worker in reversed(self.workers):
            worker.stop(max(0.1, deadline - time.monotonic()))
        if self._thread.is_alive():
            if self.health_server is not None:  # answered NOT_SERVING until the end
                stopping = self.health_server.stop(None)
                asyncio.run_coroutine_threadsafe(stopping, self._loop).result()
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._stopped.set()
        log.info("stopped")

    async def _drain(self) -> None:
        # NOT_SERVING first, then a pause: load balancers stop sending here before calls
        # are refused; then streams are told to reconnect elsewhere.
        await self.health.enter_graceful_shutdown()
        await asyncio.sleep(self.drain_s)
        for hook in self.on_drain:
            hook()
        await self.server.stop(self.grace_s)

    def run_until_signalled(self) -> int:
        """Start, serve until SIGTERM or SIGINT, stop gracefully; return the exit status."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: threading.Thread(target=self.stop).start())
        self.start()
        settle_heap()
        while not self._stopped.wait(1.0):
            pass
        return self.exit_code


#: Container objects allocated (net of those freed) before the youngest generation is
#: collected. With Python's 700, WatchOrders' fan-out cost about 10% more CPU per delivery
#: and set off full collections of 40-60 ms (docs/performance.md, window 12).
YOUNG_GENERATION_THRESHOLD = 10_000


def settle_heap() -> None:
    """Once a process is up: set what is alive now (modules, settings, the app) aside from
    the garbage collector's full collections. It lives as long as the process, yet every
    full collection walked it again: with 5,000 WatchOrders streams open, one stopped the
    process for 0.2 s (`python -m bench.fanout`). The garbage made so far is collected
    first, so none of it is kept. From then on the youngest generation is collected after
    YOUNG_GENERATION_THRESHOLD allocations rather than 700: most of what a call or a
    delivery allocates is freed by its reference count long before, and fewer collections
    mean fewer objects moved up to be walked again by the older ones."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
