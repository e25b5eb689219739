"""The caller of a call: set for the block that serves it, and gone after it."""

from __future__ import annotations

import pytest

from services.common.security.identity import Caller, acting_as, current_caller

pytestmark = pytest.mark.unit


def test_acting_as_sets_the_caller_for_the_block_only() -> None:
    user, operator = Caller("2", 2, False), Caller("ops", None, True)
    assert current_caller() is None
    with acting_as(user):
        assert current_caller() is user
        with pytest.raises(RuntimeError), acting_as(operator):
            assert current_caller() is operator
            raise RuntimeError("the servicer failed")
        assert current_caller() is user
    assert current_caller() is None
