"""One service as two processes' worth of parts, on SQLite (one file) and on PostgreSQL: an api
part serving the public API and a worker part consuming and relaying, each with a database
of its own, against the session's real broker; and the SQLite outbox written by several
processes at once, read as its relay reads it."""

from __future__ import annotations

import multiprocessing
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sqlalchemy import func, insert, select
from sqlmodel import col

from deploy.stack.processes import is_serving
from paysaga.admin.v1 import admin_pb2, admin_pb2_grpc
from paysaga.v1 import orders_pb2, orders_pb2_grpc
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.outbox import OutboxRecord
from services.common.messaging.relay import OutboxRelay
from services.common.persistence.checkpoints import WalCheckpointer
from services.common.persistence.db import Database
from services.common.persistence.migrate import migrate
from services.common.persistence.wakeup import RelayAlreadyRunning
from services.common.serving.grpc_app import GrpcApp
from services.common.timeutil import utcnow
from services.order.__main__ import MIGRATIONS as ORDER_MIGRATIONS
from services.order.__main__ import SERVICE_NAME as ORDER_SERVICE
from services.order.__main__ import WATCH_HEALTH
from services.order.__main__ import build as build_order
from services.order.settings import OrderSettings
from services.order.store import seed_catalogue
from services.payment.__main__ import build as build_payment
from services.payment.models import Account
from services.payment.settings import PaymentSettings
from tests.integration.conftest import database_urls
from tests.support import pin_groups_to_end, wait_for, wait_terminal

pytestmark = pytest.mark.integration

#: The user whose orders these tests place (funded in the fixture).
USER = 7001


@dataclass
class Split:
    """The Order service as an api and a worker, the Payment service in one process."""

    kind: str
    order_url: str
    api: GrpcApp
    worker: GrpcApp
    payment: GrpcApp
    settings: dict[str, Any]

    def stub(self, app: GrpcApp) -> orders_pb2_grpc.OrderServiceStub:
        return orders_pb2_grpc.OrderServiceStub(grpc.insecure_channel(app.address))

    def status(self, app: GrpcApp) -> admin_pb2.GetStatusResponse:
        admin = admin_pb2_grpc.AdminServiceStub(grpc.insecure_channel(app.address))
        return admin.GetStatus(admin_pb2.GetStatusRequest(), timeout=10)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def split(
    request: pytest.FixtureRequest, kafka_broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Split]:
    kind = str(request.param)
    data = tmp_path_factory.mktemp(f"roles-{kind}")
    order_url, payment_url = database_urls(kind, data, request, ("order", "payment"))
    seed_db = Database(order_url)
    seed_catalogue(seed_db)
    seed_db.dispose()
    payment_db = Database(payment_url)
    with payment_db.write() as session:
        session.add(Account(user_id=USER, balance_cents=10**9))
    payment_db.dispose()
    tag = uuid.uuid4().hex[:6]
    groups = {"order": f"it-roles-{tag}-order", "payment": f"it-roles-{tag}-payment"}
    pin_groups_to_end(
        kafka_broker.bootstrap_servers,
        {groups["order"]: ["transactions"], groups["payment"]: ["orders", "payments"]},
    )
    common: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka_broker.bootstrap_servers,
        "grpc_address": "127.0.0.1:0",
        "log_format": "text",
        # The worker's relay hears of the api's commits at once (SQLite: a datagram,
        # PostgreSQL: NOTIFY); left to its poll, no order would complete within the waits.
        "relay_idle_poll_s": 120.0,
    }
    order = {"database_url": order_url, "consumer_group": groups["order"], **common}
    apps = [
        build_order(OrderSettings(role="api", instance_id="order-0-api", **order)),
        build_order(OrderSettings(role="worker", instance_id="order-0-worker", **order)),
        build_payment(
            PaymentSettings(database_url=payment_url, consumer_group=groups["payment"], **common)
        ),
    ]
    for app in apps:
        app.start()
    for app in apps:
        wait_for(f"{app.service_names[0]} to be SERVING", lambda a=app: is_serving(a.address))
    wait_for("the api to follow order-updates", lambda: _healthy(apps[0], WATCH_HEALTH))
    yield Split(kind, order_url, *apps, settings=order)
    for app in apps:
        app.stop()


def _healthy(app: GrpcApp, name: str) -> bool:
    with grpc.insecure_channel(app.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=name), timeout=5
        )
    return reply.status == health_pb2.HealthCheckResponse.SERVING


def _parts(app: GrpcApp) -> set[type]:
    return {type(worker) for worker in app.workers}


def test_each_process_runs_its_own_part(split: Split) -> None:
    assert split.api.service_names == [ORDER_SERVICE, "paysaga.admin.v1.AdminService"]
    assert not {EventConsumer, OutboxRelay} & _parts(split.api), "no consumer, no relay"
    assert set(split.api.status_checks) == {"paysaga.kafka", WATCH_HEALTH}
    assert split.worker.service_names == ["paysaga.admin.v1.AdminService"]
    assert {EventConsumer, OutboxRelay} <= _parts(split.worker)
    checkpoints = split.kind == "sqlite"  # the worker of a SQLite file checkpoints its log
    assert (WalCheckpointer in _parts(split.worker)) == checkpoints
    assert WalCheckpointer not in _parts(split.api)
    assert set(split.worker.status_checks) == {
        "paysaga.outbox",
        "paysaga.kafka",
        "paysaga.consumer",
    }
    with pytest.raises(grpc.RpcError) as refused:
        split.stub(split.worker).GetOrder(orders_pb2.GetOrderRequest(order_id="x"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED, "no public API on a worker"


def test_orders_taken_by_the_api_complete_through_the_worker(split: Split) -> None:
    orders = split.stub(split.api)
    stream = orders.WatchOrders(orders_pb2.WatchOrdersRequest(user_id=USER), timeout=60)
    created = [
        orders.CreateOrder(
            orders_pb2.CreateOrderRequest(user_id=USER, product_id=1, request_id=str(uuid.uuid4()))
        ).order
        for _ in range(3)
    ]
    for order in created:
        assert wait_terminal(orders, order.id, 30).status == orders_pb2.ORDER_STATUS_COMPLETED
    # WatchOrders on the api process: its tail of order-updates sees the worker's changes.
    completed: set[str] = set()
    for answer in stream:
        if answer.order.status == orders_pb2.ORDER_STATUS_COMPLETED:
            completed.add(answer.order.id)
        if completed >= {o.id for o in created}:
            break
    stream.cancel()
    # Each process reports its own part: the worker applied the outcomes, the api none.
    worker, api = split.status(split.worker), split.status(split.api)
    assert worker.replica == "order-0-worker" and api.replica == "order-0-api"
    assert worker.records_applied >= 3 and api.records_applied == 0
    assert "paysaga.consumer" in worker.health_names and WATCH_HEALTH in api.health_names
    assert not worker.problems and not api.problems


def test_a_second_worker_is_refused_on_sqlite_and_welcome_on_postgres(split: Split) -> None:
    settings = OrderSettings(**{**split.settings, "role": "worker", "instance_id": "order-1"})
    if split.kind == "sqlite":  # two relays on one file would publish every row twice
        with pytest.raises(RelayAlreadyRunning, match="one worker process"):
            build_order(settings)
        return
    second = build_order(settings)  # PostgreSQL: relays claim rows, consumers partitions
    second.start()
    try:
        wait_for("a second worker to be SERVING", lambda: is_serving(second.address))
        assert split.status(second).replica == "order-1"
    finally:
        second.stop()


# -- several processes writing one SQLite outbox -------------------------------------------


def _write_outbox(url: str, writer: int, transactions: int) -> int:
    """Commit `transactions` transactions of 1..4 outbox rows each; return the errors met."""
    db = Database(url)
    errors = 0
    try:
        for n in range(transactions):
            rows = [
                {
                    "event_id": f"w{writer}-{n}-{i}",
                    "topic": "orders",
                    "key": b"k",
                    "value": b"v",
                    "headers": b"",
                    "created_at": utcnow(),
                }
                for i in range(1 + n % 4)
            ]
            try:
                with db.write() as session:
                    session.execute(insert(OutboxRecord), rows)
            except Exception:
                errors += 1
    finally:
        db.dispose()
    return errors


def test_rows_written_by_several_processes_commit_in_seq_order(tmp_path: Path) -> None:
    """The SQLite relay reads on from the highest seq it published (SqliteClaims): that holds
    only if every transaction commits its rows after every smaller seq is committed. seq is
    AUTOINCREMENT, assigned by INSERT inside a BEGIN IMMEDIATE transaction, which holds the
    database's single write lock, across processes too, until COMMIT: no other transaction
    can take a seq or commit meanwhile. Here three processes write while this one reads as
    the relay does and deletes what it read: it must miss nothing and see nothing twice."""
    url = f"sqlite:///{tmp_path}/order.db"
    migrate(url, ORDER_MIGRATIONS)
    db = Database(url)
    writers, transactions = 3, 300
    context = multiprocessing.get_context("spawn")
    with context.Pool(writers) as pool:
        pending = pool.starmap_async(
            _write_outbox, [(url, w, transactions) for w in range(writers)]
        )
        seen: list[tuple[int, str]] = []
        through = 0
        while True:
            finished = pending.ready()  # read once more after the last commit
            with db.read() as session:
                rows = session.execute(
                    select(col(OutboxRecord.seq), col(OutboxRecord.event_id))
                    .where(col(OutboxRecord.seq) > through)
                    .order_by(col(OutboxRecord.seq))
                ).all()
            seen += [(row.seq, row.event_id) for row in rows]
            if rows:
                through = rows[-1].seq
                with db.write() as session:  # as the relay deletes what it published
                    session.execute(
                        OutboxRecord.__table__.delete().where(  # type: ignore[attr-defined]
                            col(OutboxRecord.seq) <= through
                        )
                    )
            if finished:
                break
        errors = pending.get(timeout=60)
    assert errors == [0] * writers, "no writer met 'database is locked' or any other error"
    expected = {
        f"w{w}-{n}-{i}"
        for w in range(writers)
        for n in range(transactions)
        for i in range(1 + n % 4)
    }
    ids = [event_id for _, event_id in seen]
    assert len(ids) == len(set(ids)), "no row read twice"
    assert set(ids) == expected, f"{len(expected - set(ids))} row(s) committed behind the reader"
    assert [seq for seq, _ in seen] == sorted(seq for seq, _ in seen)
    with db.read() as session:
        assert session.execute(select(func.count()).select_from(OutboxRecord)).scalar_one() == 0
    db.dispose()
