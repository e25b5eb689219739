"""What a new user does with grpcurl, against the real services in their own processes."""

from __future__ import annotations

import time

import pytest

from tests.e2e.conftest import Stack

pytestmark = pytest.mark.e2e

ORDER = "paysaga.v1.OrderService"
PAYMENT = "paysaga.v1.PaymentService"


def wait_status(stack: Stack, order_id: str, timeout_s: float = 60.0) -> dict[str, object]:
    """GetOrder through grpcurl until the order is COMPLETED or FAILED."""
    deadline = time.monotonic() + timeout_s
    while True:
        order = stack.order.call(f"{ORDER}/GetOrder", {"order_id": order_id})["order"]
        assert isinstance(order, dict)
        if order["status"] in ("ORDER_STATUS_COMPLETED", "ORDER_STATUS_FAILED"):
            return order
        assert time.monotonic() < deadline, f"order {order_id} still {order['status']}"
        time.sleep(0.1)


def test_reflection_lists_the_services(stack: Stack) -> None:
    listed = stack.order.run("list").stdout.split()
    assert {ORDER, "grpc.health.v1.Health"} <= set(listed)
    assert PAYMENT in stack.payment.run("list").stdout.split()


def test_create_order_completes_and_debits(stack: Stack) -> None:
    created = stack.order.call(f"{ORDER}/CreateOrder", {"user_id": 1, "product_id": 1})
    order = created["order"]
    assert isinstance(order, dict)
    assert order["status"] == "ORDER_STATUS_CREATED"
    assert order["price_cents"] == "5000"
    final = wait_status(stack, str(order["id"]))
    assert final["status"] == "ORDER_STATUS_COMPLETED"
    balance = stack.payment.call(f"{PAYMENT}/GetBalance", {"user_id": 1})
    assert balance["balance_cents"] == "5000"


def test_unaffordable_order_fails_and_list_shows_both(stack: Stack) -> None:
    created = stack.order.call(f"{ORDER}/CreateOrder", {"user_id": 1, "product_id": 5})
    final = wait_status(stack, str(created["order"]["id"]))  # type: ignore[index]
    assert final["status"] == "ORDER_STATUS_FAILED"
    assert str(final["failure_reason"]).startswith("insufficient balance: ")
    listed = stack.order.call(f"{ORDER}/ListOrders", {"user_id": 1})
    statuses = {o["status"] for o in listed["orders"]}  # type: ignore[union-attr]
    assert {"ORDER_STATUS_COMPLETED", "ORDER_STATUS_FAILED"} <= statuses


@pytest.mark.parametrize(
    ("method", "body", "code", "message"),
    [
        (
            f"{ORDER}/CreateOrder",
            {"user_id": 1, "product_id": 999},
            "NotFound",
            "product 999 does not exist",
        ),
        (
            f"{ORDER}/CreateOrder",
            {"user_id": 0, "product_id": 1},
            "InvalidArgument",
            "user_id must be a positive integer",
        ),
        (
            f"{ORDER}/GetOrder",
            {"order_id": "00000000-0000-0000-0000-000000000000"},
            "NotFound",
            "does not exist",
        ),
        (
            f"{ORDER}/ListOrders",
            {"page_token": "garbage"},
            "InvalidArgument",
            "page_token is malformed",
        ),
        (f"{PAYMENT}/GetBalance", {"user_id": 77}, "NotFound", "user 77 does not exist"),
    ],
)
def test_errors_carry_a_code_and_what_to_fix(
    stack: Stack, method: str, body: dict[str, object], code: str, message: str
) -> None:
    done = (
        stack.order.run(method, body)
        if method.startswith(ORDER)
        else stack.payment.run(method, body)
    )
    assert done.returncode != 0
    assert f"Code: {code}" in done.stderr
    assert message in done.stderr


def test_health_is_serving(stack: Stack) -> None:
    reply = stack.order.call("grpc.health.v1.Health/Check", {})
    assert reply["status"] == "SERVING"
