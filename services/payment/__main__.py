"""Runs the Payment service: `python -m services.payment` (settings from PAYMENT_* env vars)."""

from __future__ import annotations

import sys

from paysaga.v1 import payments_pb2, payments_pb2_grpc
from services.common.assembly import build_app
from services.common.db import Database
from services.common.grpc_app import GrpcApp
from services.common.inbox import ProcessedEvent
from services.common.logs import configure_logging
from services.common.outbox import OutboxRecord
from services.common.topics import ORDERS, PAYMENTS
from services.payment.handlers import ChargeOrders, RecordTransactions
from services.payment.models import Account, Payment, Transaction
from services.payment.server import PaymentServicer
from services.payment.settings import PaymentSettings
from services.payment.store import seed_accounts

SERVICE_NAME = payments_pb2.DESCRIPTOR.services_by_name["PaymentService"].full_name


def build(settings: PaymentSettings) -> GrpcApp:
    """The Payment service process, ready to start."""
    db = Database(settings.database_url)
    db.create_tables([Account, Payment, Transaction, OutboxRecord, ProcessedEvent])
    seed_accounts(db)
    servicer = PaymentServicer(db)
    return build_app(
        name="payment",
        settings=settings,
        db=db,
        group_id=settings.consumer_group,
        handlers={ORDERS.name: ChargeOrders, PAYMENTS.name: RecordTransactions},
        service_names=[SERVICE_NAME],
        register=lambda server: payments_pb2_grpc.add_PaymentServiceServicer_to_server(
            servicer, server
        ),
    )


def main() -> None:
    settings = PaymentSettings()
    configure_logging("payment", settings.log_level, settings.log_format)
    sys.exit(build(settings).run_until_signalled())


if __name__ == "__main__":
    main()
