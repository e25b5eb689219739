"""Both services in this test process, against the session's real broker, on SQLite and on
PostgreSQL: every test that uses `saga` runs once per database kind."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import grpc
import pytest

from deploy.postgres.runtime import PostgresRuntime
from deploy.stack.processes import is_serving
from paysaga.v1 import orders_pb2, orders_pb2_grpc, payments_pb2_grpc
from services.common.persistence.db import Database
from services.common.persistence.migrate import migrate
from services.common.serving.grpc_app import GrpcApp
from services.order.__main__ import MIGRATIONS as ORDER_MIGRATIONS
from services.order.__main__ import WATCH_HEALTH
from services.order.__main__ import build as build_order
from services.order.settings import OrderSettings
from services.order.store import seed_catalogue
from services.payment.__main__ import MIGRATIONS as PAYMENT_MIGRATIONS
from services.payment.__main__ import build as build_payment
from services.payment.models import Account
from services.payment.settings import PaymentSettings
from tests.support import pin_groups_to_end, wait_for, wait_terminal

_user_ids = itertools.count(1000)

DB_KINDS = ["sqlite", "postgres"]


@dataclass
class Saga:
    """The running saga: stubs for both services and both databases for test setup."""

    kind: str
    bootstrap: str
    orders: orders_pb2_grpc.OrderServiceStub
    payments: payments_pb2_grpc.PaymentServiceStub
    order_db: Database
    payment_db: Database
    #: The running services (admin tests attach to their workers) and consumer groups.
    order_app: GrpcApp
    payment_app: GrpcApp
    groups: dict[str, str]

    def new_user(self, balance_cents: int) -> int:
        """A user of this test alone, holding `balance_cents`."""
        user_id = next(_user_ids)
        with self.payment_db.write() as session:
            session.add(Account(user_id=user_id, balance_cents=balance_cents))
        return user_id

    def order(self, user_id: int, product_id: int, request_id: str = "") -> orders_pb2.Order:
        return self.orders.CreateOrder(
            orders_pb2.CreateOrderRequest(
                user_id=user_id, product_id=product_id, request_id=request_id or new_key()
            )
        ).order

    def completed(self, user_id: int, product_id: int) -> orders_pb2.Order:
        """Place an order and wait for its end."""
        return wait_terminal(self.orders, self.order(user_id, product_id).id)


def new_key() -> str:
    return str(uuid.uuid4())


def database_urls(
    kind: str, data: Path, request: pytest.FixtureRequest, names: tuple[str, str]
) -> tuple[str, str]:
    """Fresh, migrated order and payment databases of `kind`."""
    if kind == "sqlite":
        urls = (f"sqlite:///{data}/{names[0]}.db", f"sqlite:///{data}/{names[1]}.db")
    else:
        server: PostgresRuntime = request.getfixturevalue("postgres_server")
        urls = (server.create_database(), server.create_database())
    migrate(urls[0], ORDER_MIGRATIONS)
    migrate(urls[1], PAYMENT_MIGRATIONS)
    return urls


@pytest.fixture(scope="module", params=DB_KINDS)
def db_kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


# Module-scoped: the stacks of different modules share the broker's topics, so one
# module's services must be gone before the next module's start.
@pytest.fixture(scope="module")
def saga(
    db_kind: str,
    kafka_broker: Any,
    tmp_path_factory: pytest.TempPathFactory,
    request: pytest.FixtureRequest,
) -> Iterator[Saga]:
    data: Path = tmp_path_factory.mktemp(f"saga-{db_kind}")
    order_url, payment_url = database_urls(db_kind, data, request, ("order", "payment"))
    order_db, payment_db = Database(order_url), Database(payment_url)
    seed_catalogue(order_db)
    groups = {f"it-{db_kind}-{uuid.uuid4().hex[:6]}-{name}": name for name in ("order", "payment")}
    by_service = {service: group for group, service in groups.items()}
    # New groups start at the topics' end: this stack never sees another stack's events.
    pin_groups_to_end(
        kafka_broker.bootstrap_servers,
        {by_service["order"]: ["transactions"], by_service["payment"]: ["orders", "payments"]},
    )
    common = {
        "kafka_bootstrap_servers": kafka_broker.bootstrap_servers,
        "grpc_address": "127.0.0.1:0",
        "log_format": "text",
    }
    apps: list[GrpcApp] = [
        build_order(
            OrderSettings(database_url=order_url, consumer_group=by_service["order"], **common)
        ),
        build_payment(
            PaymentSettings(
                database_url=payment_url, consumer_group=by_service["payment"], **common
            )
        ),
    ]
    for app in apps:
        app.start()
    for app in apps:
        wait_for(f"{app.service_names[0]} to be SERVING", lambda a=app: is_serving(a.address))
    # WatchOrders answers UNAVAILABLE until the tail follows order-updates: wait for it too.
    following = partial(is_serving, apps[0].address, service=WATCH_HEALTH)
    wait_for("the Order service to follow order changes", following)
    order_channel = grpc.insecure_channel(apps[0].address)
    payment_channel = grpc.insecure_channel(apps[1].address)
    yield Saga(
        kind=db_kind,
        bootstrap=kafka_broker.bootstrap_servers,
        orders=orders_pb2_grpc.OrderServiceStub(order_channel),
        payments=payments_pb2_grpc.PaymentServiceStub(payment_channel),
        order_db=order_db,
        payment_db=payment_db,
        order_app=apps[0],
        payment_app=apps[1],
        groups=by_service,
    )
    order_channel.close()
    payment_channel.close()
    for app in apps:
        app.stop()
    order_db.dispose()
    payment_db.dispose()
