"""Two replicas of each service on one PostgreSQL database per service, in this process."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any

import grpc
import pytest

from deploy.postgres.runtime import PostgresRuntime
from deploy.stack.processes import is_serving
from paysaga.v1 import orders_pb2, orders_pb2_grpc
from services.common.headers import header_dict
from services.common.persistence.db import Database
from services.common.persistence.migrate import migrate
from services.common.serving.grpc_app import AddressInUse, GrpcApp
from services.order.__main__ import MIGRATIONS as ORDER_MIGRATIONS
from services.order.__main__ import WATCH_HEALTH
from services.order.__main__ import build as build_order
from services.order.settings import OrderSettings
from services.order.store import seed_catalogue
from services.payment.__main__ import MIGRATIONS as PAYMENT_MIGRATIONS
from services.payment.__main__ import build as build_payment
from services.payment.settings import PaymentSettings
from services.payment.store import seed_accounts
from tests.support import TERMINAL, pin_groups_to_end, read_topic, wait_for, wait_terminal

pytestmark = pytest.mark.integration


@dataclass
class Replicas:
    bootstrap: str
    orders: list[orders_pb2_grpc.OrderServiceStub]
    apps: list[GrpcApp]


@pytest.fixture(scope="module")
def replicas(kafka_broker: Any, postgres_server: PostgresRuntime) -> Iterator[Replicas]:
    order_url, payment_url = postgres_server.create_database(), postgres_server.create_database()
    migrate(order_url, ORDER_MIGRATIONS)
    migrate(payment_url, PAYMENT_MIGRATIONS)
    for url, seed in ((order_url, seed_catalogue), (payment_url, seed_accounts)):
        db = Database(url)
        seed(db)
        db.dispose()
    tag = uuid.uuid4().hex[:6]
    groups = {"order": f"rep-{tag}-order", "payment": f"rep-{tag}-payment"}
    bootstrap = kafka_broker.bootstrap_servers
    pin_groups_to_end(
        bootstrap, {groups["order"]: ["transactions"], groups["payment"]: ["orders", "payments"]}
    )
    common = {"kafka_bootstrap_servers": bootstrap, "log_format": "text"}
    apps: list[GrpcApp] = []
    for i in range(2):
        apps.append(build_order(OrderSettings(
            database_url=order_url, consumer_group=groups["order"], instance_id=f"order-{i}",
            grpc_address="127.0.0.1:0", **common,
        )))  # fmt: skip
        apps.append(build_payment(PaymentSettings(
            database_url=payment_url, consumer_group=groups["payment"],
            instance_id=f"payment-{i}", grpc_address="127.0.0.1:0", **common,
        )))  # fmt: skip
    for app in apps:
        app.start()
    for app in apps:
        wait_for(f"{app.address} to be SERVING", lambda a=app: is_serving(a.address))
    for app in apps[0::2]:  # WatchOrders answers UNAVAILABLE until the tail follows
        following = partial(is_serving, app.address, service=WATCH_HEALTH)
        wait_for(f"{app.address} to follow order changes", following)
    channels = [grpc.insecure_channel(app.address) for app in apps[0::2]]
    yield Replicas(bootstrap, [orders_pb2_grpc.OrderServiceStub(c) for c in channels], apps)
    for channel in channels:
        channel.close()
    for app in apps:
        app.stop()


def create(
    stub: orders_pb2_grpc.OrderServiceStub, user: int = 5, key: str = ""
) -> orders_pb2.Order:
    request = orders_pb2.CreateOrderRequest(
        user_id=user, product_id=1, request_id=key or str(uuid.uuid4())
    )
    return stub.CreateOrder(request).order


def test_orders_on_either_replica_complete_and_each_event_is_published_once(
    replicas: Replicas,
) -> None:
    with ThreadPoolExecutor(max_workers=8) as pool:
        orders = list(pool.map(lambda i: create(replicas.orders[i % 2]), range(40)))
    for order in orders:
        final = wait_terminal(replicas.orders[1], order.id)
        assert final.status == orders_pb2.ORDER_STATUS_COMPLETED, final.failure_reason
    ids = {o.id for o in orders}

    def purchase_of_ours(record: Any) -> bool:
        headers = header_dict(record.headers())
        return headers.get("ce_subject") in ids and headers["ce_type"].endswith("OrderPurchased")

    found = read_topic(replicas.bootstrap, "orders", purchase_of_ours, count=len(ids))
    per_order = Counter(header_dict(r.headers())["ce_subject"] for r in found)
    assert set(per_order) == ids and set(per_order.values()) == {1}


def test_a_watch_on_one_replica_sees_changes_applied_on_the_other(replicas: Replicas) -> None:
    stream = replicas.orders[0].WatchOrders(orders_pb2.WatchOrdersRequest(user_id=4), timeout=60)
    stream.initial_metadata()
    ended: set[str] = set()
    created = [create(replicas.orders[1], user=4) for _ in range(5)]
    wanted = {o.id for o in created}

    def follow() -> None:
        for change in stream:
            if change.order.id in wanted and change.order.status in TERMINAL:
                ended.add(change.order.id)
                if ended == wanted:
                    return

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    reader.join(60)
    stream.cancel()
    assert ended == wanted


def test_one_request_id_sent_to_both_replicas_at_once_makes_one_order(replicas: Replicas) -> None:
    key = str(uuid.uuid4())
    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = set(pool.map(lambda i: create(replicas.orders[i % 2], key=key).id, range(16)))
    assert len(ids) == 1


def test_a_second_server_on_a_taken_port_is_refused(replicas: Replicas) -> None:
    taken = replicas.apps[0].address
    with pytest.raises(AddressInUse):
        GrpcApp(
            address=taken,
            service_names=[],
            register=lambda _server: None,
            workers=[],
            readiness_checks=[],
        )
