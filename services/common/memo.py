"""A memo per key of what was derived from one object, derived again when that object changes.

The gRPC interceptors wrap each method's handler on every call; a wrapping that depends only
on the method and on the handler underneath is made once per method with this (the handler
underneath is the same object from call to call unless an interceptor below wraps anew).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

Source = TypeVar("Source")
Derived = TypeVar("Derived")


class DerivedPerKey(Generic[Source, Derived]):
    """`derive(source)` for `key`, kept while `key` comes with that same `source` object.

    Keys must be few (gRPC method names a server has: an unknown method has no handler to
    wrap). Safe across threads: two threads may derive the same value, and one is kept.
    """

    def __init__(self, derive: Callable[[Hashable, Source], Derived]) -> None:
        self._derive = derive
        self._memo: dict[Hashable, tuple[Source, Derived]] = {}

    def get(self, key: Hashable, source: Source) -> Derived:
        found = self._memo.get(key)
        if found is not None and found[0] is source:
            return found[1]
        derived = self._derive(key, source)
        self._memo[key] = (source, derived)
        return derived
