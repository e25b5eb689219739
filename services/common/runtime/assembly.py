"""Wires a service process from its parts: database, relay, consumer and gRPC app, for its role.

A service hands in its public API and its background work as factories (`PublicApi`,
`Background`); `build_app` builds only what the process's role runs (services.common.
runtime.roles): `api` the public API, `worker` the consumer, the relay and the background
workers, `all` both. Every role serves health and the admin API.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import grpc
from confluent_kafka import Consumer

from services.common.messaging.consumer import EventConsumer, Handler
from services.common.messaging.kafka import (
    HighWatermarks,
    KafkaProbe,
    consumer_config,
    new_producer,
)
from services.common.messaging.relay import OutboxRelay
from services.common.messaging.retries import RetryPolicy
from services.common.messaging.topics import TopicTable
from services.common.operations.admin import SERVICE_NAME as ADMIN_SERVICE_NAME
from services.common.operations.admin import AdminServicer
from services.common.persistence.checkpoints import WalCheckpointer
from services.common.persistence.db import Database
from services.common.persistence.kinds import sqlite_file
from services.common.persistence.wakeup import WakeupListener, channel_for
from services.common.runtime.roles import Role, check_role, runs_workers, serves_api
from services.common.security.policy import Security
from services.common.serving.grpc_app import GrpcApp, Worker
from services.common.settings import ServiceSettings

#: Health-check name of the outbox: NOT_SERVING while rows are parked or the backlog is stale.
OUTBOX_HEALTH = "paysaga.outbox"
#: NOT_SERVING while no Kafka broker answers (the service itself stays ready: see build_app).
KAFKA_HEALTH = "paysaga.kafka"
#: NOT_SERVING while the consumer is alive but applies nothing although records wait.
CONSUMER_HEALTH = "paysaga.consumer"


@dataclass(frozen=True)
class PublicApi:
    """What the api role serves: the service's public gRPC API and what it needs.

    `writers` are workers the servicers write through (e.g. a GroupCommitter); they stop
    after the gRPC server and the consumer, and before the relay publishes the rest.
    `readers` feed the servicers (e.g. the order-updates tail); they start first and stop
    last. `on_loop` hooks get the server's event loop before it starts; `on_drain` hooks
    run on it when the service stops (see GrpcApp).
    """

    service_name: str
    register: Callable[[grpc.aio.Server], None]
    writers: Sequence[Worker] = ()
    readers: Sequence[Worker] = ()
    status_checks: Mapping[str, Callable[[], str | None]] = field(default_factory=dict)
    on_loop: Sequence[Callable[[asyncio.AbstractEventLoop], None]] = ()
    on_drain: Sequence[Callable[[], None]] = ()


@dataclass(frozen=True)
class Background:
    """What the worker role runs besides the consumer and the relay: `workers` (deadlines,
    retention, ...), stopped before the relay; `on_consumer` hooks get the consumer once it
    is built (e.g. a worker that asks it what it has caught up with)."""

    workers: Sequence[Worker] = ()
    on_consumer: Sequence[Callable[[EventConsumer], None]] = ()


#: What a worker process serves instead of a public API: nothing but health and the admin API.
_NO_PUBLIC_API = PublicApi(service_name="", register=lambda server: None)


def build_app(
    *,
    name: str,
    settings: ServiceSettings,
    db: Database,
    group_id: str,
    topics: TopicTable,
    handlers: dict[str, Handler],
    admin: AdminServicer,
    api: Callable[[], PublicApi],
    background: Callable[[], Background] = Background,
) -> GrpcApp:
    """A runnable process of the service in the role `settings.role`: the public API that
    `api` builds, the outbox relay, the consumer of `handlers` (whose topics are in
    `topics`, the table the service speaks) and the workers `background` builds, as far as
    the role runs them; in every role health and `admin`.

    Raises BadRole, or RelayAlreadyRunning when another process is the worker of this
    SQLite database already.
    """
    role: Role = check_role(settings.role, f"{name.upper()}_ROLE")
    security = Security()
    security.check_address(settings.grpc_address)
    bootstrap = settings.kafka_bootstrap_servers
    public = api() if serves_api(role) else _NO_PUBLIC_API
    status_checks: dict[str, Callable[[], str | None]] = {}
    if runs_workers(role):
        relay, consumer, listener = _relay_and_consumer(
            name,
            settings,
            db,
            group_id,
            topics,
            handlers,
            listen=role == "worker" or (role == "all" and db.is_sqlite),
        )
        parts = background()
        for hook in parts.on_consumer:
            hook(consumer)
        checkpoints = db.is_sqlite and sqlite_file(db.url) is not None
        workers: list[Worker] = [
            *public.readers,
            *listener,
            relay,
            *public.writers,
            *parts.workers,
            # The one worker of a SQLite file checkpoints it, so that commits need not.
            *([WalCheckpointer(db.url)] if checkpoints else []),
            consumer,
        ]
        status_checks[OUTBOX_HEALTH] = relay.problem
        status_checks[KAFKA_HEALTH] = KafkaProbe(bootstrap).problem
        status_checks[CONSUMER_HEALTH] = lambda: consumer.stalled(settings.relay_stale_after_s)
    else:
        workers = [*public.readers, *public.writers]
        status_checks[KAFKA_HEALTH] = KafkaProbe(bootstrap).problem
        channel = channel_for(db.url)
        if channel is not None:  # each commit of outbox rows wakes the worker's relay
            db.outbox_signal.announce_through(channel)

    def register(server: grpc.aio.Server) -> None:
        public.register(server)
        admin.register(server)

    app = GrpcApp(
        address=settings.grpc_address,
        service_names=[n for n in (public.service_name, ADMIN_SERVICE_NAME) if n],
        register=register,
        workers=workers,
        # Ready = can answer its RPCs, which need the database only: during a broker
        # outage CreateOrder still takes orders (their events wait in the outbox), and
        # the outage shows under KAFKA_HEALTH.
        readiness_checks=[db.ping],
        status_checks={**status_checks, **public.status_checks},
        on_loop=public.on_loop,
        on_drain=public.on_drain,
        max_workers=settings.grpc_max_workers,
        keepalive_s=settings.grpc_keepalive_s,
        keepalive_timeout_s=settings.grpc_keepalive_timeout_s,
        max_request_bytes=settings.grpc_max_request_bytes,
        grace_s=settings.shutdown_grace_s,
        drain_s=settings.shutdown_drain_s,
        health_address=settings.health_address,
        interceptors=security.interceptors(),
        credentials=security.credentials(),
        reflection=security.reflection,
    )
    admin.attach_app(app)
    return app


def _relay_and_consumer(
    name: str,
    settings: ServiceSettings,
    db: Database,
    group_id: str,
    topics: TopicTable,
    handlers: dict[str, Handler],
    *,
    listen: bool,
) -> tuple[OutboxRelay, EventConsumer, list[WakeupListener]]:
    """The outbox relay, the consumer and, when `listen` (a worker process: the rows are
    written elsewhere too; or any process with a relay on a SQLite file, whose lock then
    refuses a second relay on that file), what wakes the relay for commits made in other
    processes."""
    listeners = []
    channel = channel_for(db.url) if listen else None
    if channel is not None:
        channel.listen()  # first: a second worker on this SQLite file stops here
        listeners.append(WakeupListener(channel, db.outbox_signal))
    bootstrap = settings.kafka_bootstrap_servers
    relay = OutboxRelay(
        db,
        lambda: new_producer(bootstrap, f"paysaga-{name}-relay"),
        batch_size=settings.relay_batch_size,
        idle_poll_s=settings.relay_idle_poll_s,
        round_interval_s=settings.relay_round_interval_ms / 1000,
        max_attempts=settings.relay_max_attempts,
        stale_after_s=settings.relay_stale_after_s,
    )
    client_id = f"paysaga-{settings.instance_id or name}"
    config = consumer_config(bootstrap, group_id, client_id, settings.instance_id)
    consumer = EventConsumer(
        db,
        Consumer(config),
        handlers,
        topics=topics,
        batch_size=settings.consumer_batch_size,
        retry=RetryPolicy(
            retries=settings.handler_retries,
            backoff_s=settings.handler_retry_backoff_ms / 1000,
            max_total_s=settings.handler_retry_max_s,
        ),
        high_watermarks=HighWatermarks(bootstrap),
        new_consumer=lambda: Consumer(config),
    )
    return relay, consumer, listeners
