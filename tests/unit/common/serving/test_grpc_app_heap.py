"""settle_heap: what is alive once a process is up is set aside from full collections."""

from __future__ import annotations

import gc
import weakref

import pytest

from services.common.serving.grpc_app import YOUNG_GENERATION_THRESHOLD, settle_heap

pytestmark = pytest.mark.unit


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def test_the_living_are_set_aside_and_the_garbage_collected_first() -> None:
    garbage = _Cycle()  # in a cycle: only the collector frees it
    gone = weakref.ref(garbage)
    del garbage
    kept = _Cycle()
    thresholds = gc.get_threshold()
    try:
        settle_heap()
        assert gone() is None  # collected, not frozen
        assert gc.get_freeze_count() > 0
        assert not any(o is kept for o in gc.get_objects())  # full collections skip it
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_the_youngest_generation_is_collected_less_often_the_older_ones_as_before() -> None:
    before = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # Python's defaults
    try:
        settle_heap()
        assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, 10, 10)
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
