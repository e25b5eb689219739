"""Domain rules of both services: plain functions, no I/O."""

import pytest

from services.common.money import format_cents
from services.order.domain import InvalidOrderRequest, Status, check_order_request, next_status
from services.payment.domain import decide_payment

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("cents", "text"),
    [(5000, "50.00"), (0, "0.00"), (7, "0.07"), (-125, "-1.25"), (100001, "1000.01")],
)
def test_format_cents(cents: int, text: str) -> None:
    assert format_cents(cents) == text


def test_payment_approved_when_balance_covers_price() -> None:
    assert decide_payment(user_id=1, balance_cents=5000, amount_cents=5000).approved


def test_payment_declined_with_reason_when_balance_too_low() -> None:
    decision = decide_payment(user_id=1, balance_cents=5000, amount_cents=100000)
    assert not decision.approved
    assert decision.reason == "insufficient balance: 50.00 < 1000.00"


def test_payment_declined_for_unknown_user() -> None:
    decision = decide_payment(user_id=9, balance_cents=None, amount_cents=5000)
    assert (decision.approved, decision.reason) == (False, "unknown user 9")


@pytest.mark.parametrize(
    ("user_id", "product_id", "request_id", "message"),
    [
        (0, 1, "", "user_id must be a positive integer, got 0"),
        (-3, 1, "", "user_id must be a positive integer, got -3"),
        (1, 0, "", "product_id must be a positive integer, got 0"),
        (1, 1, "x" * 129, "request_id must be at most 128 characters, got 129"),
        (1, 1, "", "request_id is required: send a new unique key"),
        (1, 1, "nul\x00byte", "request_id must be printable characters"),
    ],
)
def test_invalid_order_requests_say_what_to_fix(
    user_id: int, product_id: int, request_id: str, message: str
) -> None:
    with pytest.raises(InvalidOrderRequest, match=message):
        check_order_request(user_id, product_id, request_id)


def test_valid_order_request_passes() -> None:
    check_order_request(1, 5, "retry-key-1")


def test_created_order_completes_or_fails() -> None:
    assert next_status(Status.CREATED, True, "") == (Status.COMPLETED, "")
    assert next_status(Status.CREATED, False, "unknown user 9") == (Status.FAILED, "unknown user 9")
    assert next_status(Status.CREATED, False, "") == (Status.FAILED, "payment was not completed")


@pytest.mark.parametrize("terminal", [Status.COMPLETED, Status.FAILED])
@pytest.mark.parametrize("successful", [True, False])
def test_terminal_order_never_changes(terminal: Status, successful: bool) -> None:
    assert next_status(terminal, successful, "late event") is None
