"""Every error the API raises carries a google.rpc.ErrorInfo (AIP-193) with a stable reason
and the domain paysaga.dev, read back from a real in-process server's trailing metadata; the
status message stays what grpcurl shows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2

from paysaga.v1 import orders_pb2, orders_pb2_grpc, payments_pb2, payments_pb2_grpc
from services.common.messaging.journal import DeadLetter, SagaStep
from services.common.messaging.outbox import OutboxRecord, ParkedRecord
from services.common.persistence.db import Database
from services.common.security import authz
from services.common.security.auth_settings import AuthSettings
from services.common.security.interceptor import authenticator
from services.common.security.tokens import mint_token
from services.common.serving.grpc_app import GrpcApp
from services.common.serving.grpc_errors import (
    ERROR_DOMAIN,
    INTERNAL_MESSAGE,
    abort,
    abort_async,
    error_info,
)
from services.order.feed import OrderFeed
from services.order.models import Order, Product, SagaDeadline
from services.order.server import OrderServicer
from services.order.store import seed_catalogue
from services.order.streams import WatchStreams
from services.payment.models import Account, Payment, Transaction
from services.payment.server import PaymentServicer

pytestmark = pytest.mark.unit

SETTINGS = AuthSettings(enabled=True, hs256_secret="k" * 40)


def refuse_with_default(_request: bytes, context: grpc.ServicerContext) -> bytes:
    abort(context, grpc.StatusCode.FAILED_PRECONDITION, "not now")


async def refuse_with_reason(_request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await abort_async(context, grpc.StatusCode.NOT_FOUND, "no such thing", "THING_NOT_FOUND")


def mine_only(request: bytes, _context: grpc.ServicerContext) -> bytes:
    authz.require_user(int(request.decode()))
    return b"ok"


def boom(_request: bytes, _context: grpc.ServicerContext) -> bytes:
    raise ValueError("SELECT secret FROM table")


def _register(db: Database) -> Any:
    def register(server: grpc.aio.Server) -> None:
        handlers: dict[str, Any] = {
            "Default": grpc.unary_unary_rpc_method_handler(refuse_with_default),
            "Reason": grpc.unary_unary_rpc_method_handler(refuse_with_reason),
            "MineOnly": grpc.unary_unary_rpc_method_handler(mine_only),
            "Boom": grpc.unary_unary_rpc_method_handler(boom),
        }
        server.add_generic_rpc_handlers(
            [
                grpc.method_handlers_generic_handler("t.T", handlers),
                grpc.method_handlers_generic_handler("paysaga.admin.v1.Admin", handlers),
            ]
        )
        payments_pb2_grpc.add_PaymentServiceServicer_to_server(PaymentServicer(db), server)

    return register


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    path: Path = tmp_path_factory.mktemp("errors") / "payment.db"
    db = Database(f"sqlite:///{path}")
    db.create_tables([Account, Payment, Transaction])
    app = GrpcApp(
        address="127.0.0.1:0",
        service_names=["t.T"],
        register=_register(db),
        workers=[],
        readiness_checks=[],
        drain_s=0,
        interceptors=[authenticator(SETTINGS)],
    )
    app.start()
    with grpc.insecure_channel(app.address) as chan:
        yield chan
    app.stop()


def failed(channel: grpc.Channel, call: Any) -> tuple[grpc.RpcError, error_details_pb2.ErrorInfo]:
    with pytest.raises(grpc.RpcError) as raised:
        call(channel)
    info = error_info(raised.value)
    assert info is not None, f"no ErrorInfo on {raised.value.code()}: {raised.value.details()}"
    assert info.domain == ERROR_DOMAIN
    return raised.value, info


def bearer(subject: str, operator: bool = False) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {mint_token(SETTINGS, subject=subject, operator=operator)}")]


def raw(method: str, body: str, metadata: Any) -> Any:
    return lambda channel: channel.unary_unary(method)(body.encode(), metadata=metadata, timeout=5)


def test_a_reason_given_is_carried_with_the_message(channel: grpc.Channel) -> None:
    error, info = failed(channel, raw("/t.T/Reason", "", bearer("2")))
    assert (error.code(), error.details()) == (grpc.StatusCode.NOT_FOUND, "no such thing")
    assert info.reason == "THING_NOT_FOUND"


def test_without_a_reason_the_status_code_names_it(channel: grpc.Channel) -> None:
    error, info = failed(channel, raw("/t.T/Default", "", bearer("2")))
    assert (error.code(), error.details()) == (grpc.StatusCode.FAILED_PRECONDITION, "not now")
    assert info.reason == "FAILED_PRECONDITION"


def test_unexpected_errors_are_internal(channel: grpc.Channel) -> None:
    error, info = failed(channel, raw("/t.T/Boom", "", bearer("2")))
    assert (error.details(), info.reason) == (INTERNAL_MESSAGE, "INTERNAL")


@pytest.mark.parametrize(
    ("method", "body", "metadata", "code", "reason"),
    [
        ("/t.T/MineOnly", "2", None, grpc.StatusCode.UNAUTHENTICATED, "UNAUTHENTICATED"),
        ("/t.T/MineOnly", "3", bearer("2"), grpc.StatusCode.PERMISSION_DENIED, "NOT_YOUR_USER"),
        (
            "/t.T/MineOnly",
            "0",
            bearer("2"),
            grpc.StatusCode.PERMISSION_DENIED,
            "INSUFFICIENT_SCOPE",
        ),
        (
            "/paysaga.admin.v1.Admin/MineOnly",
            "2",
            bearer("2"),
            grpc.StatusCode.PERMISSION_DENIED,
            "INSUFFICIENT_SCOPE",
        ),
    ],
)
def test_authentication_and_authorization_refusals_say_why(
    channel: grpc.Channel,
    method: str,
    body: str,
    metadata: Any,
    code: grpc.StatusCode,
    reason: str,
) -> None:
    error, info = failed(channel, raw(method, body, metadata))
    assert (error.code(), info.reason) == (code, reason)


def test_the_payment_service_names_its_errors(channel: grpc.Channel) -> None:
    stub = payments_pb2_grpc.PaymentServiceStub(channel)
    ops = bearer("ops", operator=True)
    error, info = failed(
        channel, lambda _: stub.GetBalance(payments_pb2.GetBalanceRequest(user_id=9), metadata=ops)
    )
    assert (error.details(), info.reason) == ("user 9 does not exist", "USER_NOT_FOUND")
    _, info = failed(
        channel,
        lambda _: stub.GetTransaction(
            payments_pb2.GetTransactionRequest(transaction_id="nope"), metadata=ops
        ),
    )
    assert info.reason == "INVALID_TRANSACTION_ID"
    _, info = failed(
        channel,
        lambda _: stub.GetTransaction(
            payments_pb2.GetTransactionRequest(transaction_id=str(uuid.uuid4())), metadata=ops
        ),
    )
    assert info.reason == "TRANSACTION_NOT_FOUND"
    _, info = failed(
        channel,
        lambda _: stub.ListTransactions(
            payments_pb2.ListTransactionsRequest(user_id=1, page_token="junk"), metadata=ops
        ),
    )
    assert info.reason == "INVALID_PAGE_REQUEST"


@pytest.fixture(scope="module")
def orders(tmp_path_factory: pytest.TempPathFactory) -> Iterator[orders_pb2_grpc.OrderServiceStub]:
    """The real Order servicer on an in-process server (auth off: the local caller)."""
    path: Path = tmp_path_factory.mktemp("orders") / "order.db"
    db = Database(f"sqlite:///{path}")
    db.create_tables(
        [Product, Order, SagaDeadline, OutboxRecord, ParkedRecord, SagaStep, DeadLetter]
    )
    seed_catalogue(db)
    feed = OrderFeed(10, 10)
    streams = WatchStreams(
        db, feed, max_streams=1, max_streams_per_caller=1, max_streams_per_operator=1
    )
    servicer = OrderServicer(db, streams, deadline_s=60)
    app = GrpcApp(
        address="127.0.0.1:0",
        service_names=[],
        register=lambda server: orders_pb2_grpc.add_OrderServiceServicer_to_server(
            servicer, server
        ),
        workers=[servicer.writes],
        readiness_checks=[],
        drain_s=0,
        interceptors=[authenticator(AuthSettings(enabled=False))],
    )
    app.start()
    with grpc.insecure_channel(app.address) as chan:
        yield orders_pb2_grpc.OrderServiceStub(chan)
    app.stop()


def test_the_order_service_names_its_errors(
    channel: grpc.Channel, orders: orders_pb2_grpc.OrderServiceStub
) -> None:
    def create(product_id: int, request_id: str) -> Any:
        return lambda _: orders.CreateOrder(
            orders_pb2.CreateOrderRequest(user_id=1, product_id=product_id, request_id=request_id),
            timeout=10,
        )

    orders.CreateOrder(
        orders_pb2.CreateOrderRequest(user_id=1, product_id=1, request_id="r-1"), timeout=10
    )
    error, info = failed(channel, create(2, "r-1"))
    assert (error.code(), info.reason) == (grpc.StatusCode.INVALID_ARGUMENT, "REQUEST_ID_REUSED")
    error, info = failed(channel, create(999_999, "r-2"))
    assert (error.code(), info.reason) == (grpc.StatusCode.NOT_FOUND, "PRODUCT_NOT_FOUND")
    _, info = failed(
        channel,
        lambda _: orders.GetOrder(orders_pb2.GetOrderRequest(order_id=str(uuid.uuid4()))),
    )
    assert info.reason == "ORDER_NOT_FOUND"
