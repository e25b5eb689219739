"""Payment rules, free of I/O: can this user pay this amount?"""

from __future__ import annotations

from dataclasses import dataclass

from services.common.money import format_cents


@dataclass(frozen=True)
class Decision:
    """Whether to debit, and why not when declined."""

    approved: bool
    reason: str = ""


def decide_payment(*, user_id: int, balance_cents: int | None, amount_cents: int) -> Decision:
    """Approve when the user exists and the balance covers the amount; otherwise say why not."""
    if balance_cents is None:
        return Decision(False, f"unknown user {user_id}")
    if balance_cents < amount_cents:
        return Decision(
            False,
            f"insufficient balance: {format_cents(balance_cents)} < {format_cents(amount_cents)}",
        )
    return Decision(True)
