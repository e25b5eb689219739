"""What a new user does with grpcurl, against the real services in their own processes."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import ORDER, PAYMENT, GrpcurlStack, wait_status

pytestmark = pytest.mark.e2e


def test_reflection_lists_the_services(stack: GrpcurlStack) -> None:
    listed = stack.order.run("list").stdout.split()
    assert {ORDER, "grpc.health.v1.Health"} <= set(listed)
    assert PAYMENT in stack.payment.run("list").stdout.split()


def test_create_order_completes_and_debits(stack: GrpcurlStack) -> None:
    body = {"user_id": 1, "product_id": 1, "request_id": "try-1"}
    created = stack.order.call(f"{ORDER}/CreateOrder", body)
    order = created["order"]
    assert isinstance(order, dict)
    assert order["status"] == "ORDER_STATUS_CREATED"
    assert order["price_cents"] == "5000"
    final = wait_status(stack.order, str(order["id"]))
    assert final["status"] == "ORDER_STATUS_COMPLETED"
    balance = stack.payment.call(f"{PAYMENT}/GetBalance", {"user_id": 1})
    assert balance["balance_cents"] == "5000"
    again = stack.order.call(f"{ORDER}/CreateOrder", body)["order"]
    assert isinstance(again, dict)
    assert again["id"] == order["id"], "a retry with the same request_id is the same order"


def test_unaffordable_order_fails_and_list_shows_both(stack: GrpcurlStack) -> None:
    body = {"user_id": 1, "product_id": 5, "request_id": "try-2"}
    created = stack.order.call(f"{ORDER}/CreateOrder", body)
    final = wait_status(stack.order, str(created["order"]["id"]))  # type: ignore[index]
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
            {"user_id": 1, "product_id": 999, "request_id": "try-3"},
            "NotFound",
            "product 999 does not exist",
        ),
        (
            f"{ORDER}/CreateOrder",
            {"user_id": 0, "product_id": 1, "request_id": "try-4"},
            "InvalidArgument",
            "user_id must be a positive integer",
        ),
        (
            f"{ORDER}/CreateOrder",
            {"user_id": 1, "product_id": 1},
            "InvalidArgument",
            "request_id is required",
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
    stack: GrpcurlStack, method: str, body: dict[str, object], code: str, message: str
) -> None:
    done = (
        stack.order.run(method, body)
        if method.startswith(ORDER)
        else stack.payment.run(method, body)
    )
    assert done.returncode != 0
    assert f"Code: {code}" in done.stderr
    assert message in done.stderr


def test_health_is_serving(stack: GrpcurlStack) -> None:
    reply = stack.order.call("grpc.health.v1.Health/Check", {})
    assert reply["status"] == "SERVING"
