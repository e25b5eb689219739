"""Runs the Order service: `python -m services.order` (settings from ORDER_* env vars)."""

from __future__ import annotations

import sys

from paysaga.v1 import orders_pb2, orders_pb2_grpc
from services.common.assembly import build_app
from services.common.db import Database
from services.common.grpc_app import GrpcApp
from services.common.inbox import ProcessedEvent
from services.common.logs import configure_logging
from services.common.outbox import OutboxRecord
from services.common.topics import TRANSACTIONS
from services.order.handlers import finish_orders_handler
from services.order.models import Order, Product
from services.order.server import OrderServicer
from services.order.settings import OrderSettings
from services.order.store import seed_catalogue
from services.order.watch import OrderChanges

SERVICE_NAME = orders_pb2.DESCRIPTOR.services_by_name["OrderService"].full_name


def build(settings: OrderSettings) -> GrpcApp:
    """The Order service process, ready to start."""
    db = Database(settings.database_url)
    db.create_tables([Product, Order, OutboxRecord, ProcessedEvent])
    seed_catalogue(db)
    servicer = OrderServicer(db, OrderChanges())
    return build_app(
        name="order",
        settings=settings,
        db=db,
        group_id=settings.consumer_group,
        handlers={TRANSACTIONS.name: finish_orders_handler(servicer.publish_changes)},
        service_names=[SERVICE_NAME],
        register=lambda server: orders_pb2_grpc.add_OrderServiceServicer_to_server(
            servicer, server
        ),
        writers=[servicer.writes],
    )


def main() -> None:
    settings = OrderSettings()
    configure_logging("order", settings.log_level, settings.log_format)
    sys.exit(build(settings).run_until_signalled())


if __name__ == "__main__":
    main()
