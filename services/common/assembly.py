"""Wires a service process from its parts: database, relay, consumer and gRPC app."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import grpc
from confluent_kafka import Consumer

from services.common.consumer import EventConsumer, Handler
from services.common.db import Database
from services.common.grpc_app import GrpcApp, Worker
from services.common.kafka import KafkaProbe, consumer_config, new_producer
from services.common.relay import OutboxRelay
from services.common.settings import ServiceSettings


def build_app(
    *,
    name: str,
    settings: ServiceSettings,
    db: Database,
    group_id: str,
    handlers: dict[str, Handler],
    service_names: Sequence[str],
    register: Callable[[grpc.Server], None],
    writers: Sequence[Worker] = (),
) -> GrpcApp:
    """A runnable service: its servicers, the outbox relay and the consumer of `handlers`.

    `writers` are workers the servicers write through (e.g. a GroupCommitter); they stop
    after the gRPC server and the consumer, and before the relay publishes the rest.
    """
    bootstrap = settings.kafka_bootstrap_servers
    relay = OutboxRelay(
        db,
        lambda: new_producer(bootstrap, f"paysaga-{name}-relay"),
        batch_size=settings.relay_batch_size,
        idle_poll_s=settings.relay_idle_poll_s,
    )
    consumer = EventConsumer(
        db,
        Consumer(consumer_config(bootstrap, group_id, f"paysaga-{name}")),
        handlers,
        batch_size=settings.consumer_batch_size,
    )
    return GrpcApp(
        address=settings.grpc_address,
        service_names=service_names,
        register=register,
        workers=[relay, *writers, consumer],
        readiness_checks=[db.ping, KafkaProbe(bootstrap)],
        max_workers=settings.grpc_max_workers,
        max_request_bytes=settings.grpc_max_request_bytes,
        grace_s=settings.shutdown_grace_s,
    )
