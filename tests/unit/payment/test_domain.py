"""The Payment service's domain rules: plain functions, no I/O."""

import pytest

from services.payment.domain import decide_payment

pytestmark = pytest.mark.unit


def test_payment_approved_when_balance_covers_price() -> None:
    assert decide_payment(user_id=1, balance_cents=5000, amount_cents=5000).approved


def test_payment_declined_with_reason_when_balance_too_low() -> None:
    decision = decide_payment(user_id=1, balance_cents=5000, amount_cents=100000)
    assert not decision.approved
    assert decision.reason == "insufficient balance: 50.00 < 1000.00"


def test_payment_declined_for_unknown_user() -> None:
    decision = decide_payment(user_id=9, balance_cents=None, amount_cents=5000)
    assert (decision.approved, decision.reason) == (False, "unknown user 9")
