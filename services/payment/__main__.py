"""Runs the Payment service: `python -m services.payment [serve [--role R]|migrate|seed]`."""

from __future__ import annotations

import sys
from pathlib import Path

from paysaga.v1 import payments_pb2, payments_pb2_grpc
from services.common.persistence.db import Database
from services.common.runtime import entrypoint
from services.common.runtime.assembly import Background, PublicApi, build_app
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
    """The Payment service process of `settings.role`, ready to start (its database must be
    migrated): the api role serves the public API, the worker role consumes, relays and
    runs retention (roles)."""
    db = Database(
        settings.database_url,
        pool_size=settings.database_pool_size,
        instance=settings.instance_id or "payment",
    )
    admin = payment_admin(db, settings)

    def api() -> PublicApi:
        servicer = PaymentServicer(db)
        return PublicApi(
            service_name=SERVICE_NAME,
            register=lambda server: payments_pb2_grpc.add_PaymentServiceServicer_to_server(
                servicer, server
            ),
        )

    return build_app(
        name="payment",
        settings=settings,
        db=db,
        group_id=settings.consumer_group,
        topics=SAGA_TOPICS,
        handlers={ORDERS.name: ChargeOrders, PAYMENTS.name: RecordTransactions},
        admin=admin,
        api=api,
        background=lambda: Background(workers=[admin.retention_worker()]),
    )


def main() -> None:
    sys.exit(
        entrypoint.run(
            name="payment",
            settings=PaymentSettings,
            migrations=MIGRATIONS,
            build=build,
            seed=seed_accounts,
        )
    )


if __name__ == "__main__":
    main()
