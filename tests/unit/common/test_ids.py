"""Time-ordered ids: valid version 7 UUIDs that sort by the millisecond they were made."""

from __future__ import annotations

import time
import uuid

from services.common.ids import time_ordered_uuid, uuid7_text

_SOME_MILLIS = 1_700_000_000_123
_TEN_BYTES = bytes(range(0xA1, 0xAB))  # a1 a2 ... aa: every byte different


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


def test_the_layout_is_time_version_rand_a_variant_rand_b() -> None:
    """RFC 9562: 48 bits of time, 4 of version, 12 of rand_a (the top 12 random bits), 2 of
    variant, 62 of rand_b (the low 62 random bits); the 6 bits between are not used."""
    random = int.from_bytes(_TEN_BYTES, "big")
    expected = (
        _SOME_MILLIS << 80
        | 0x7 << 76
        | (random >> 68) << 64
        | 0b10 << 62
        | random & ((1 << 62) - 1)
    )
    assert uuid.UUID(uuid7_text(_SOME_MILLIS, _TEN_BYTES)).int == expected
    # 1_700_000_000_123 is 0x018bcfe5687b; rand_a is a1a; "a3" keeps its variant bits 10.
    assert uuid7_text(_SOME_MILLIS, _TEN_BYTES) == "018bcfe5-687b-7a1a-a3a4-a5a6a7a8a9aa"


def test_each_of_74_random_input_bits_moves_its_own_output_bit() -> None:
    base = uuid.UUID(uuid7_text(_SOME_MILLIS, bytes(10))).int
    moved: set[int] = set()
    for bit in range(80):
        flipped = (1 << bit).to_bytes(10, "big")
        changed = uuid.UUID(uuid7_text(_SOME_MILLIS, flipped)).int ^ base
        if changed:
            assert changed & (changed - 1) == 0, f"input bit {bit} moved several output bits"
            moved.add(changed)
    assert len(moved) == 74


def test_ids_of_later_milliseconds_sort_after_as_text() -> None:
    made = [uuid7_text(m, b"\xff" * 10) for m in (1_000, 1_001, 86_400_000)]
    made.append(uuid7_text(86_400_001, bytes(10)))
    assert made == sorted(made)


def test_ids_made_together_share_their_beginning_and_differ_at_their_end() -> None:
    made = [time_ordered_uuid() for _ in range(1_000)]
    assert len(set(made)) == 1_000
    assert len({text[-8:] for text in made}) > 990  # 32 random bits: what the CLI shows
    assert len({text[:8] for text in made}) <= 2  # the top 32 bits of the time
