"""Page tokens: round trip, and clear errors for what a caller can get wrong."""

import base64
import json
from datetime import UTC, datetime

import pytest

from services.common.serving.paging import BadPageRequest, Cursor, parse_page

pytestmark = pytest.mark.unit


def test_cursor_round_trips() -> None:
    cursor = Cursor(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC), "abc")
    assert Cursor.decode(cursor.encode("orders:0:0"), "orders:0:0") == cursor


NAIVE_TIME = base64.urlsafe_b64encode(
    json.dumps({"s": "orders:0:0", "t": "2024-01-01T00:00:00", "i": "x"}).encode()
).decode()


@pytest.mark.parametrize("token", ["not-base64!!", "e30", "bm90IGpzb24", "W10", NAIVE_TIME])
def test_malformed_token_is_rejected(token: str) -> None:
    with pytest.raises(BadPageRequest, match="page_token is malformed"):
        parse_page(10, token, "orders:0:0")


def test_token_for_other_filters_is_rejected() -> None:
    token = Cursor(datetime.now(UTC), "abc").encode("orders:1:0")
    with pytest.raises(BadPageRequest, match="other filters"):
        parse_page(10, token, "orders:2:0")


@pytest.mark.parametrize(("size", "expected"), [(0, 50), (1, 1), (1000, 1000)])
def test_page_size(size: int, expected: int) -> None:
    assert parse_page(size, "", "s") == (expected, None)


@pytest.mark.parametrize("size", [-1, 1001])
def test_page_size_out_of_range(size: int) -> None:
    with pytest.raises(BadPageRequest, match="page_size must be between 1 and 1000"):
        parse_page(size, "", "s")
