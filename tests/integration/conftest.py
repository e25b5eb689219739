"""Both services in this test process, against the session's real broker and real SQLite files."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from deploy.stack import is_serving
from paysaga.v1 import orders_pb2, orders_pb2_grpc, payments_pb2_grpc
from services.common.db import Database
from services.common.grpc_app import GrpcApp
from services.order.__main__ import build as build_order
from services.order.settings import OrderSettings
from services.payment.__main__ import build as build_payment
from services.payment.models import Account
from services.payment.settings import PaymentSettings
from tests.support import wait_for, wait_terminal

_user_ids = itertools.count(1000)


@dataclass
class Saga:
    """The running saga: stubs for both services and the payment database for test setup."""

    bootstrap: str
    orders: orders_pb2_grpc.OrderServiceStub
    payments: payments_pb2_grpc.PaymentServiceStub
    payment_db: Database

    def new_user(self, balance_cents: int) -> int:
        """A user of this test alone, holding `balance_cents`."""
        user_id = next(_user_ids)
        with self.payment_db.write() as session:
            session.add(Account(user_id=user_id, balance_cents=balance_cents))
        return user_id

    def order(self, user_id: int, product_id: int, request_id: str = "") -> orders_pb2.Order:
        return self.orders.CreateOrder(
            orders_pb2.CreateOrderRequest(
                user_id=user_id, product_id=product_id, request_id=request_id
            )
        ).order

    def completed(self, user_id: int, product_id: int) -> orders_pb2.Order:
        """Place an order and wait for its end."""
        return wait_terminal(self.orders, self.order(user_id, product_id).id)


@pytest.fixture(scope="session")
def saga(kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Saga]:
    data: Path = tmp_path_factory.mktemp("saga")
    common = {
        "kafka_bootstrap_servers": kafka_broker.bootstrap_servers,
        "grpc_address": "127.0.0.1:0",
        "log_format": "text",
    }
    apps: list[GrpcApp] = [
        build_order(OrderSettings(database_url=f"sqlite:///{data}/order.db", **common)),
        build_payment(PaymentSettings(database_url=f"sqlite:///{data}/payment.db", **common)),
    ]
    for app in apps:
        app.start()
    for app in apps:
        wait_for(f"{app.service_names[0]} to be SERVING", lambda a=app: is_serving(a.address))
    order_channel = grpc.insecure_channel(apps[0].address)
    payment_channel = grpc.insecure_channel(apps[1].address)
    payment_db = Database(f"sqlite:///{data}/payment.db")
    yield Saga(
        bootstrap=kafka_broker.bootstrap_servers,
        orders=orders_pb2_grpc.OrderServiceStub(order_channel),
        payments=payments_pb2_grpc.PaymentServiceStub(payment_channel),
        payment_db=payment_db,
    )
    order_channel.close()
    payment_channel.close()
    for app in apps:
        app.stop()
    payment_db.dispose()
