"""Time-ordered ids: valid version 7 UUIDs that sort by the millisecond they were made."""

from __future__ import annotations

import time
import uuid

import pytest

from services.common import ids
from services.common.ids import time_ordered_uuid


def test_an_id_is_an_rfc_version_7_uuid_in_the_usual_form() -> None:
    text = time_ordered_uuid()
    parsed = uuid.UUID(text)
    assert str(parsed) == text
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_its_first_48_bits_are_the_unix_milliseconds_it_was_made() -> None:
    before = time.time_ns() // 1_000_000
    made = uuid.UUID(time_ordered_uuid()).int >> 80
    after = time.time_ns() // 1_000_000
    assert before <= made <= after


def test_ids_of_later_milliseconds_sort_after_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([1_000 * 1_000_000, 1_001 * 1_000_000, 86_400_000 * 1_000_000])
    monkeypatch.setattr(ids.time, "time_ns", lambda: next(clock))
    made = [time_ordered_uuid() for _ in range(3)]
    assert made == sorted(made)


def test_ids_of_one_millisecond_differ_in_their_74_random_bits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(ids.time, "time_ns", lambda: 1_700_000_000_000 * 1_000_000)
    made = {time_ordered_uuid() for _ in range(10_000)}
    assert len(made) == 10_000
    assert len({text[:13] for text in made}) == 1  # the same 48-bit time prefix


def test_every_random_bit_is_used(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids.time, "time_ns", lambda: 0)
    monkeypatch.setattr(ids.os, "urandom", lambda n: b"\xff" * n)
    ones = uuid.UUID(time_ordered_uuid())
    monkeypatch.setattr(ids.os, "urandom", lambda n: b"\x00" * n)
    zeros = uuid.UUID(time_ordered_uuid())
    rand_a = ((1 << 12) - 1) << 64  # the 12 bits after the version
    rand_b = (1 << 62) - 1  # the 62 bits after the variant
    assert ones.int ^ zeros.int == rand_a | rand_b
    assert ones.version == zeros.version == 7
