"""DerivedPerKey: derived once per key while the source object stays the same."""

from __future__ import annotations

from collections.abc import Hashable

import pytest

from services.common.memo import DerivedPerKey

pytestmark = pytest.mark.unit


def test_derived_once_per_key_while_its_source_is_the_same_object() -> None:
    calls: list[tuple[Hashable, object]] = []

    def derive(key: Hashable, source: object) -> tuple[Hashable, object]:
        calls.append((key, source))
        return (key, source)

    memo: DerivedPerKey[object, tuple[Hashable, object]] = DerivedPerKey(derive)
    first, other = object(), object()

    assert memo.get("/a", first) == ("/a", first)
    assert memo.get("/a", first) == ("/a", first)
    assert memo.get("/b", first) == ("/b", first)
    assert len(calls) == 2

    # A new source for a key (an interceptor below wrapped anew): derived from it, not reused.
    assert memo.get("/a", other) == ("/a", other)
    assert memo.get("/a", other) == ("/a", other)
    assert len(calls) == 3
