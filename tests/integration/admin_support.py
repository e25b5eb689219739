"""The admin API of both services over a running saga, served beside it, and the `paysaga`
command pointed at it: what the admin, held-money and redrive tests share."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from confluent_kafka import Producer

from paysaga.admin.v1 import admin_pb2, admin_pb2_grpc
from paysaga.v1 import events_pb2
from services.cli import run
from services.common.messaging.cloudevents import EventMeta
from services.common.operations.admin import AdminServicer
from services.order.admin import order_admin
from services.order.settings import OrderSettings
from services.payment.admin import payment_admin
from services.payment.settings import PaymentSettings
from services.saga.topics import TRANSACTIONS
from tests.integration.conftest import Saga


@dataclass
class Admin:
    """The admin API of both services over the saga's databases, and the command."""

    saga: Saga
    order: admin_pb2_grpc.AdminServiceStub
    payment: admin_pb2_grpc.AdminServiceStub
    flags: list[str]

    def cli(self, capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
        """Run `paysaga --json ...` in this process; its parsed output."""
        capsys.readouterr()
        code = run([*self.flags, *argv, "--json"])
        out, err = capsys.readouterr()
        assert code == 0, err
        return json.loads(out)

    def caught_up(self, service: str = "order") -> bool:
        """The service's consumer group has consumed everything on its topics."""
        stub = self.order if service == "order" else self.payment
        status = stub.GetStatus(admin_pb2.GetStatusRequest())
        return not status.lag_error and all(p.lag == 0 for p in status.lag)


def _serve(servicer: AdminServicer) -> tuple[grpc.Server, str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    servicer.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


@contextmanager
def serve_admin(saga: Saga, **settings: Any) -> Iterator[Admin]:
    """Both services' admin API over `saga` (with these settings of both), until the end."""
    common = {"kafka_bootstrap_servers": saga.bootstrap, **settings}
    order = order_admin(saga.order_db, OrderSettings(consumer_group=saga.groups["order"], **common))
    payment = payment_admin(
        saga.payment_db, PaymentSettings(consumer_group=saga.groups["payment"], **common)
    )
    order.attach_app(saga.order_app)
    payment.attach_app(saga.payment_app)
    (order_server, order_address), (payment_server, payment_address) = map(_serve, (order, payment))
    channels = [grpc.insecure_channel(a) for a in (order_address, payment_address)]
    try:
        yield Admin(
            saga,
            admin_pb2_grpc.AdminServiceStub(channels[0]),
            admin_pb2_grpc.AdminServiceStub(channels[1]),
            ["--order", order_address, "--payment", payment_address],
        )
    finally:
        for channel in channels:
            channel.close()
        order_server.stop(None)
        payment_server.stop(None)


def poison_transaction(saga: Saga, order_id: str, user: int) -> str:
    """A real TransactionRecorded for an order the Order service does not have (keyed by
    `user`, as the Payment service keys it); its event id."""
    meta = EventMeta.new(ce_type=TRANSACTIONS.ce_type, source=TRANSACTIONS.source, subject=order_id)
    event = events_pb2.TransactionRecorded(
        order_id=order_id,
        user_id=user,
        amount_cents=5000,
        status=events_pb2.TRANSACTION_STATUS_SUCCESSFUL,
        transaction_id=str(uuid.uuid4()),
    )
    producer = Producer({"bootstrap.servers": saga.bootstrap})
    producer.produce(
        TRANSACTIONS.name, key=str(user).encode(), value=event.SerializeToString(),
        headers=meta.headers(),
    )  # fmt: skip
    assert producer.flush(30) == 0
    return meta.id
