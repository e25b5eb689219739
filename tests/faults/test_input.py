"""Bad gRPC input under load: the right status code, a message that says why, still serving."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Callable

import grpc
import pytest

from paysaga.v1 import orders_pb2, payments_pb2
from tests.faults.scenario import Scenario, assert_holds
from tests.faults.stack import FaultStack

pytestmark = pytest.mark.faults

MAX = 2**63 - 1
INVALID = grpc.StatusCode.INVALID_ARGUMENT
NOT_FOUND = grpc.StatusCode.NOT_FOUND


def _token(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


def _create(user_id: int = 1, product_id: int = 1, request_id: str | None = None) -> object:
    """A CreateOrder request, with a new request_id unless one is given."""
    if request_id is None:
        request_id = str(uuid.uuid4())
    return orders_pb2.CreateOrderRequest(
        user_id=user_id, product_id=product_id, request_id=request_id
    )


def _list(**fields: object) -> object:
    return orders_pb2.ListOrdersRequest(**fields)  # type: ignore[arg-type]


#: (what, order or payment service, method, request, expected code)
CASES: list[tuple[str, str, str, object, grpc.StatusCode]] = [
    ("CreateOrder, no fields", "order", "CreateOrder", orders_pb2.CreateOrderRequest(), INVALID),
    ("CreateOrder, no product", "order", "CreateOrder", _create(product_id=0), INVALID),
    ("CreateOrder, user 0", "order", "CreateOrder", _create(user_id=0), INVALID),
    ("CreateOrder, user -1", "order", "CreateOrder", _create(user_id=-1), INVALID),
    ("CreateOrder, user -max", "order", "CreateOrder", _create(user_id=-MAX - 1), INVALID),
    ("CreateOrder, product -7", "order", "CreateOrder", _create(product_id=-7), INVALID),
    ("CreateOrder, product 6", "order", "CreateOrder", _create(product_id=6), NOT_FOUND),
    ("CreateOrder, product max", "order", "CreateOrder", _create(product_id=MAX), NOT_FOUND),
    ("CreateOrder without request_id", "order", "CreateOrder", _create(request_id=""), INVALID),
    ("CreateOrder, request_id 129", "order", "CreateOrder", _create(request_id="r" * 129), INVALID),
    (
        "CreateOrder, 70 KiB request",
        "order",
        "CreateOrder",
        _create(request_id="r" * 70_000),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
    ("GetOrder, empty id", "order", "GetOrder", orders_pb2.GetOrderRequest(), INVALID),
    (
        "GetOrder, not a UUID",
        "order",
        "GetOrder",
        orders_pb2.GetOrderRequest(order_id="x' OR 1=1"),
        INVALID,
    ),
    (
        "GetOrder, unknown UUID",
        "order",
        "GetOrder",
        orders_pb2.GetOrderRequest(order_id=str(uuid.uuid4())),
        NOT_FOUND,
    ),
    ("ListOrders, token garbage", "order", "ListOrders", _list(page_token="%%garbage%%"), INVALID),
    ("ListOrders, token not JSON", "order", "ListOrders", _list(page_token="bm90anNvbg"), INVALID),
    ("ListOrders, token a list", "order", "ListOrders", _list(page_token=_token([1])), INVALID),
    (
        "ListOrders, token wrong types",
        "order",
        "ListOrders",
        _list(page_token=_token({"s": "orders:0:0", "t": 5, "i": 1})),
        INVALID,
    ),
    (
        "ListOrders, token other filters",
        "order",
        "ListOrders",
        _list(page_token=_token({"s": "orders:9:0", "t": "2024-01-01T00:00:00+00:00", "i": "x"})),
        INVALID,
    ),
    (
        "ListOrders, token naive time",
        "order",
        "ListOrders",
        _list(page_token=_token({"s": "orders:0:0", "t": "2024-01-01T00:00:00", "i": "x"})),
        INVALID,
    ),
    (
        "ListOrders, token time not a date",
        "order",
        "ListOrders",
        _list(page_token=_token({"s": "orders:0:0", "t": "yesterday", "i": "x"})),
        INVALID,
    ),
    ("ListOrders, page_size -1", "order", "ListOrders", _list(page_size=-1), INVALID),
    ("ListOrders, page_size huge", "order", "ListOrders", _list(page_size=2**31 - 1), INVALID),
    ("ListOrders, user -1", "order", "ListOrders", _list(user_id=-1), INVALID),
    ("ListOrders, status 99", "order", "ListOrders", _list(status=99), INVALID),
    ("GetBalance, user 0", "payment", "GetBalance", payments_pb2.GetBalanceRequest(), INVALID),
    (
        "GetBalance, user -max",
        "payment",
        "GetBalance",
        payments_pb2.GetBalanceRequest(user_id=-MAX - 1),
        INVALID,
    ),
    (
        "GetBalance, user max",
        "payment",
        "GetBalance",
        payments_pb2.GetBalanceRequest(user_id=MAX),
        NOT_FOUND,
    ),
    (
        "GetTransaction, not a UUID",
        "payment",
        "GetTransaction",
        payments_pb2.GetTransactionRequest(transaction_id="nope"),
        INVALID,
    ),
    (
        "GetTransaction, unknown UUID",
        "payment",
        "GetTransaction",
        payments_pb2.GetTransactionRequest(transaction_id=str(uuid.uuid4())),
        NOT_FOUND,
    ),
    (
        "ListTransactions, bad token",
        "payment",
        "ListTransactions",
        payments_pb2.ListTransactionsRequest(page_token="!!"),
        INVALID,
    ),
    (
        "ListTransactions, token naive time",
        "payment",
        "ListTransactions",
        payments_pb2.ListTransactionsRequest(
            page_token=_token({"s": "transactions:0:", "t": "2024-01-01T00:00:00", "i": "x"})
        ),
        INVALID,
    ),
    (
        "ListTransactions, order_id not a UUID",
        "payment",
        "ListTransactions",
        payments_pb2.ListTransactionsRequest(order_id="abc"),
        INVALID,
    ),
    (
        "ListTransactions, 70 KiB request",
        "payment",
        "ListTransactions",
        payments_pb2.ListTransactionsRequest(page_token="t" * 70_000),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ),
]

#: What the message of some cases must say, beyond being there.
DETAILS = {"CreateOrder without request_id": "request_id is required"}


def _call(stack: FaultStack, service: str, method: str) -> Callable[..., object]:
    stub = stack.orders_stub() if service == "order" else stack.payments_stub()
    return getattr(stub, method)  # type: ignore[no-any-return]


def test_bad_input_gets_the_right_status_and_the_servers_keep_serving(stack: FaultStack) -> None:
    wrong: list[str] = []
    with Scenario(stack, "bad gRPC input") as run:
        time.sleep(1.0)
        for what, service, method, request, code in CASES:
            try:
                _call(stack, service, method)(request, timeout=10)
            except grpc.RpcError as exc:
                got, details = exc.code(), exc.details()  # type: ignore[attr-defined]
                if got != code or not details or DETAILS.get(what, "") not in details:
                    wrong.append(f"{what}: {got.name} {details!r}, expected {code.name}")
            else:
                wrong.append(f"{what}: accepted, expected {code.name}")
        # The largest user id is valid input: the order is taken and fails in payment.
        huge = stack.orders_stub().CreateOrder(_create(user_id=MAX, product_id=1), timeout=10)
        run.extra_accepted.add(huge.order.id)
        time.sleep(2.0)
        outcome = run.finish()
        if run.stored_status(huge.order.id) != "FAILED":
            wrong.append(f"order of user {MAX}: {run.stored_status(huge.order.id)}, not FAILED")
    assert stack.serving(), "a service stopped serving"
    assert_holds(outcome, stack)
    assert not wrong, "\n".join(wrong)
