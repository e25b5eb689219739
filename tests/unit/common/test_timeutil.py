"""to_timestamp gives exactly what protobuf's own Timestamp.FromDatetime gives."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given
from hypothesis import strategies as st

from services.common.timeutil import to_timestamp

pytestmark = pytest.mark.unit


def _reference(moment: datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment if moment.tzinfo else moment.replace(tzinfo=UTC))
    return stamp


@pytest.mark.parametrize(
    "moment",
    [
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 500_000, tzinfo=UTC),  # before the epoch
        datetime(1, 1, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 12, 5, 18, 0, 0, 1, tzinfo=timezone(timedelta(hours=5, minutes=30))),
        datetime(2026, 12, 5, 18, 0, 0, 123_456),  # naive: UTC
    ],
)
def test_edges(moment: datetime) -> None:
    assert to_timestamp(moment) == _reference(moment)


@given(
    st.datetimes(
        timezones=st.one_of(st.none(), st.just(UTC), st.timezones()),
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
    )
)
def test_any_datetime(moment: datetime) -> None:
    assert to_timestamp(moment) == _reference(moment)
