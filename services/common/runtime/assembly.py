"""Wires a service process from its parts: database, relay, consumer and gRPC app."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence

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
from services.common.persistence.db import Database
from services.common.security.policy import Security
from services.common.serving.grpc_app import GrpcApp, Worker
from services.common.settings import ServiceSettings

#: Health-check name of the outbox: NOT_SERVING while rows are parked or the backlog is stale.
OUTBOX_HEALTH = "paysaga.outbox"
#: NOT_SERVING while no Kafka broker answers (the service itself stays ready: see build_app).
KAFKA_HEALTH = "paysaga.kafka"
#: NOT_SERVING while the consumer is alive but applies nothing although records wait.
CONSUMER_HEALTH = "paysaga.consumer"


def build_app(
    *,
    name: str,
    settings: ServiceSettings,
    db: Database,
    group_id: str,
    topics: TopicTable,
    handlers: dict[str, Handler],
    service_names: Sequence[str],
    register: Callable[[grpc.aio.Server], None],
    writers: Sequence[Worker] = (),
    readers: Sequence[Worker] = (),
    on_consumer: Sequence[Callable[[EventConsumer], None]] = (),
    readiness_checks: Sequence[Callable[[], None]] = (),
    status_checks: Mapping[str, Callable[[], str | None]] | None = None,
    on_loop: Sequence[Callable[[asyncio.AbstractEventLoop], None]] = (),
    on_drain: Sequence[Callable[[], None]] = (),
) -> GrpcApp:
    """A runnable service: its servicers, the outbox relay and the consumer of `handlers`
    (whose topics are in `topics`, the table the service speaks).

    `writers` are workers the servicers write through (e.g. a GroupCommitter); they stop
    after the gRPC server and the consumer, and before the relay publishes the rest.
    `readers` are workers that feed the servicers (e.g. the order-updates tail); they start
    first and stop last. `on_consumer` hooks get the consumer once it is built (e.g. a
    worker that asks it what it has caught up with). `on_loop` hooks get the server's
    event loop before it starts; `on_drain` hooks run on it when the service stops (see
    GrpcApp).
    """
    security = Security()
    security.check_address(settings.grpc_address)
    bootstrap = settings.kafka_bootstrap_servers
    relay = OutboxRelay(
        db,
        lambda: new_producer(bootstrap, f"paysaga-{name}-relay"),
        batch_size=settings.relay_batch_size,
        idle_poll_s=settings.relay_idle_poll_s,
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
    for hook in on_consumer:
        hook(consumer)
    return GrpcApp(
        address=settings.grpc_address,
        service_names=service_names,
        register=register,
        workers=[*readers, relay, *writers, consumer],
        # Ready = can answer its RPCs, which need the database only: during a broker
        # outage CreateOrder still takes orders (their events wait in the outbox), and
        # the outage shows under KAFKA_HEALTH.
        readiness_checks=[db.ping, *readiness_checks],
        status_checks={
            OUTBOX_HEALTH: relay.problem,
            KAFKA_HEALTH: KafkaProbe(bootstrap).problem,
            CONSUMER_HEALTH: lambda: consumer.stalled(settings.relay_stale_after_s),
            **(status_checks or {}),
        },
        on_loop=on_loop,
        on_drain=on_drain,
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
