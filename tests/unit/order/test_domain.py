"""The Order service's domain rules: plain functions, no I/O."""

import pytest

from services.order.domain import InvalidOrderRequest, Status, check_order_request, next_status

pytestmark = pytest.mark.unit


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
