"""Runs the Order service: `python -m services.order [serve|migrate|seed]` (ORDER_* settings)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import grpc
from confluent_kafka import Consumer

from paysaga.v1 import orders_pb2, orders_pb2_grpc
from services.common.messaging.kafka import consumer_config
from services.common.operations.admin import SERVICE_NAME as ADMIN_SERVICE_NAME
from services.common.persistence.db import Database
from services.common.runtime import entrypoint
from services.common.runtime.assembly import build_app
from services.common.serving.grpc_app import GrpcApp
from services.common.worker import PeriodicWorker
from services.order.admin import order_admin
from services.order.deadlines import SagaDeadlines
from services.order.feed import OrderFeed
from services.order.handlers import FinishOrders
from services.order.refunds import HeldMoney
from services.order.server import OrderServicer
from services.order.settings import OrderSettings
from services.order.store import seed_catalogue
from services.order.streams import WatchStreams
from services.order.updates_tail import OrderUpdatesTail
from services.saga.topics import SAGA_TOPICS, TRANSACTIONS

SERVICE_NAME = orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name
MIGRATIONS = Path(__file__).resolve().parent / "migrations"
#: Health name: NOT_SERVING until WatchOrders streams can start (order-updates followed).
WATCH_HEALTH = "paysaga.watch"


def build(settings: OrderSettings) -> GrpcApp:
    """The Order service process, ready to start (its database must be migrated)."""
    db = Database(
        settings.database_url,
        pool_size=settings.database_pool_size,
        instance=settings.instance_id or "order",
    )
    admin = order_admin(db, settings)
    feed = OrderFeed(settings.watch_history, settings.watch_max_backlog)
    streams = WatchStreams(
        db,
        feed,
        max_streams=settings.watch_max_streams,
        max_streams_per_caller=settings.watch_max_streams_per_caller,
        max_streams_per_operator=settings.watch_max_streams_per_operator,
    )
    servicer = OrderServicer(db, streams, deadline_s=settings.saga_deadline_s)
    tail_config = consumer_config(
        settings.kafka_bootstrap_servers,
        f"paysaga-order-watch-{uuid.uuid4()}",  # never joined: partitions are assigned
        f"paysaga-{settings.instance_id or 'order'}-watch",
    )
    tail_config["enable.auto.commit"] = False  # it keeps its place itself, never in Kafka
    tail = OrderUpdatesTail(
        Consumer(tail_config),
        feed,
        history=settings.watch_history,
    )
    saga_deadlines = SagaDeadlines(db, deadline_s=settings.saga_deadline_s)
    deadlines = PeriodicWorker("saga-deadlines", saga_deadlines, settings.deadline_poll_s)
    held_money = PeriodicWorker(
        "held-money",
        HeldMoney(db, after_s=settings.refund_reannounce_s),
        min(settings.refund_reannounce_s, 5.0),
    )

    def register(server: grpc.aio.Server) -> None:
        orders_pb2_grpc.add_OrderServiceServicer_to_server(servicer, server)
        admin.register(server)

    app = build_app(
        name="order",
        settings=settings,
        db=db,
        group_id=settings.consumer_group,
        topics=SAGA_TOPICS,
        handlers={TRANSACTIONS.name: FinishOrders},
        service_names=[SERVICE_NAME, ADMIN_SERVICE_NAME],
        register=register,
        writers=[servicer.writes, deadlines, held_money, admin.retention_worker()],
        readers=[tail],
        on_consumer=[saga_deadlines.watch],
        status_checks={WATCH_HEALTH: tail.problem},
        on_loop=[feed.bind],
        on_drain=[feed.close],
    )
    admin.attach_app(app)
    return app


def main() -> None:
    sys.exit(
        entrypoint.run(
            name="order",
            settings=OrderSettings(),
            migrations=MIGRATIONS,
            build=build,
            seed=seed_catalogue,
        )
    )


if __name__ == "__main__":
    main()
