"""Runs the Order service: `python -m services.order [serve [--role R]|migrate|seed]` (ORDER_*)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

from confluent_kafka import Consumer

from paysaga.v1 import orders_pb2
from services.common.messaging.kafka import consumer_config
from services.common.persistence.db import Database
from services.common.runtime import entrypoint
from services.common.runtime.assembly import Background, PublicApi, build_app
from services.common.serving.grpc_app import GrpcApp
from services.common.worker import PeriodicWorker
from services.order.admin import order_admin
from services.order.deadlines import SagaDeadlines
from services.order.feed import OrderFeed
from services.order.handlers import FinishOrders
from services.order.refunds import HeldMoney
from services.order.server import OrderServicer, register_order_service
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
    """The Order service process of `settings.role`, ready to start (its database must be
    migrated): the api role serves the public API, the worker role consumes, relays and
    runs the deadlines, the held-money re-announcer and retention (roles)."""
    db = Database(
        settings.database_url,
        pool_size=settings.database_pool_size,
        instance=settings.instance_id or "order",
    )
    admin = order_admin(db, settings)

    def api() -> PublicApi:
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
        tail = OrderUpdatesTail(Consumer(tail_config), feed, history=settings.watch_history)
        return PublicApi(
            service_name=SERVICE_NAME,
            register=lambda server: register_order_service(server, servicer),
            writers=[servicer.writes],
            readers=[tail],
            status_checks={WATCH_HEALTH: tail.problem},
            on_loop=[feed.bind],
            on_drain=[feed.close],
        )

    def background() -> Background:
        saga_deadlines = SagaDeadlines(db, deadline_s=settings.saga_deadline_s)
        held_money = HeldMoney(db, after_s=settings.refund_reannounce_s)
        return Background(
            workers=[
                PeriodicWorker("saga-deadlines", saga_deadlines, settings.deadline_poll_s),
                PeriodicWorker("held-money", held_money, min(settings.refund_reannounce_s, 5.0)),
                admin.retention_worker(),
            ],
            on_consumer=[saga_deadlines.watch],
        )

    return build_app(
        name="order",
        settings=settings,
        db=db,
        group_id=settings.consumer_group,
        topics=SAGA_TOPICS,
        handlers={TRANSACTIONS.name: FinishOrders},
        admin=admin,
        api=api,
        background=background,
    )


def main() -> None:
    sys.exit(
        entrypoint.run(
            name="order",
            settings=OrderSettings,
            migrations=MIGRATIONS,
            build=build,
            seed=seed_catalogue,
        )
    )


if __name__ == "__main__":
    main()
