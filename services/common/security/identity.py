"""Who is calling: the verified `Caller` of the call being served, held in a context variable.

The interceptor (services.common.security.interceptor) runs each servicer method inside
`acting_as(caller)`; servicers and services.common.security.authz read `current_caller()`.
With auth off (local development) every call runs as `LOCAL_CALLER`, who may do everything.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Caller:
    """The verified caller: a user (`user_id`) and/or an operator."""

    subject: str
    user_id: int | None
    operator: bool

    def describe(self) -> str:
        role = "operator " if self.operator else ""
        return f"{role}{self.subject}"


#: The caller when authentication is off: local development, every right.
LOCAL_CALLER = Caller(subject="local caller (auth off)", user_id=None, operator=True)

_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar("caller", default=None)


def current_caller() -> Caller | None:
    """The caller of the call being served; None outside an authenticated call."""
    return _caller.get()


@contextmanager
def acting_as(caller: Caller) -> Iterator[None]:
    """`current_caller()` is `caller` inside the block, and what it was before after it."""
    token = _caller.set(caller)
    try:
        yield
    finally:
        _caller.reset(token)
