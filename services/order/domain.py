"""Order rules, free of I/O: what a valid order request is and how a saga outcome lands."""

from __future__ import annotations

from enum import StrEnum

MAX_ID = 2**63 - 1
MAX_REQUEST_ID_LENGTH = 128


class Status(StrEnum):
    """Where an order stands; COMPLETED and FAILED are terminal."""

    CREATED = "CREATED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"

    @property
    def terminal(self) -> bool:
        return self is not Status.CREATED


class InvalidOrderRequest(ValueError):
    """A CreateOrder request the caller must fix."""


def check_order_request(user_id: int, product_id: int, request_id: str) -> None:
    """Raise InvalidOrderRequest naming the first thing wrong with a CreateOrder request."""
    if user_id <= 0:
        raise InvalidOrderRequest(f"user_id must be a positive integer, got {user_id}")
    if product_id <= 0:
        raise InvalidOrderRequest(f"product_id must be a positive integer, got {product_id}")
    if not request_id:
        raise InvalidOrderRequest(
            "request_id is required: send a new unique key (e.g. a UUID) with each order and "
            "the same key when you retry it, so a retry never creates a second order"
        )
    if not request_id.isprintable():
        raise InvalidOrderRequest("request_id must be printable characters (no control bytes)")
    if len(request_id) > MAX_REQUEST_ID_LENGTH:
        raise InvalidOrderRequest(
            f"request_id must be at most {MAX_REQUEST_ID_LENGTH} characters, got {len(request_id)}"
        )


def saga_outcome(successful: bool, reason: str) -> tuple[Status, str]:
    """The status and failure reason an order gets from its TransactionRecorded outcome."""
    if successful:
        return Status.COMPLETED, ""
    return Status.FAILED, reason or "payment was not completed"


def deadline_reason(deadline_s: float) -> str:
    """The failure reason of an order whose saga did not end in time."""
    return f"saga deadline passed: no payment outcome within {deadline_s:g} s"


def refund_note(reason: str, amount: str, transaction_id: str) -> str:
    """A FAILED order's reason once the money taken for it was given back."""
    return f"{reason}; refunded {amount} (transaction {transaction_id})"


def next_status(current: Status, successful: bool, reason: str) -> tuple[Status, str] | None:
    """The order's new (status, reason), or None when it is terminal and must not change."""
    if current.terminal:
        return None
    return saga_outcome(successful, reason)
