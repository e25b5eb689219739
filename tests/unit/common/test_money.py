"""Money as text: integer minor units, formatted once."""

import pytest

from services.common.money import format_cents

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("cents", "text"),
    [(5000, "50.00"), (0, "0.00"), (7, "0.07"), (-125, "-1.25"), (100001, "1000.01")],
)
def test_format_cents(cents: int, text: str) -> None:
    assert format_cents(cents) == text
