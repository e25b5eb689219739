"""Runs the Payment service: `python -m services.payment [serve|migrate|seed]` (PAYMENT_*)."""

from __future__ import annotations

import sys
from pathlib import Path

import grpc

from paysaga.v1 import payments_pb2, payments_pb2_grpc
from services.common.operations.admin import SERVICE_NAME as ADMIN_SERVICE_NAME
from services.common.persistence.db import Database
from services.common.runtime import entrypoint
from services.common.runtime.assembly import build_app
from services.common.serving.grpc_app import GrpcApp
from services.payment.admin import payment_admin
from services.payment.handlers import ChargeOrders, RecordTransactions
from services.payment.server import PaymentServicer
from services.payment.settings import PaymentSettings
from services.payment.store import seed_accounts
from services.saga.topics import ORDERS, PAYMENTS, SAGA_TOPICS

SERVICE_NAME = payments_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def build(settings: PaymentSettings) -> GrpcApp:
    """The Payment service process, ready to start (its database must be migrated)."""
    db = Database(
        settings.database_url,
        pool_size=settings.database_pool_size,
        instance=settings.instance_id or "payment",
    )
    servicer = PaymentServicer(db)
    admin = payment_admin(db, settings)

    def register(server: grpc.aio.Server) -> None:
        payments_pb2_grpc.add_PaymentServiceServicer_to_server(servicer, server)
        admin.register(server)

    app = build_app(
        name="payment",
        settings=settings,
        db=db,
        group_id=settings.consumer_group,
        topics=SAGA_TOPICS,
        handlers={ORDERS.name: ChargeOrders, PAYMENTS.name: RecordTransactions},
        service_names=[SERVICE_NAME, ADMIN_SERVICE_NAME],
        register=register,
        writers=[admin.retention_worker()],
    )
    admin.attach_app(app)
    return app


def main() -> None:
    sys.exit(
        entrypoint.run(
            name="payment",
            settings=PaymentSettings(),
            migrations=MIGRATIONS,
            build=build,
            seed=seed_accounts,
        )
    )


if __name__ == "__main__":
    main()
