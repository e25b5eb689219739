"""A stall of the event loop is seen while it lasts, with what the loop was running, and
measured once the loop turns again."""

from __future__ import annotations

import asyncio
import logging
import threading
import time

import pytest

from services.common.observability import stalls
from services.common.observability.stalls import STALL_DURATION, STALLS, StallWatch

pytestmark = pytest.mark.unit


def _sample(metric: object, suffix: str) -> float:
    for family in metric.collect():  # type: ignore[attr-defined]
        for sample in family.samples:
            if sample.name.endswith(suffix):
                return float(sample.value)
    raise AssertionError(f"no sample *{suffix}")


def hold_the_loop_for(seconds: float) -> None:
    time.sleep(seconds)


def test_a_loop_held_by_one_callback_is_reported_with_its_stack(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(stalls, "LOG_EVERY_S", 0.0)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    watch = StallWatch(loop, stall_s=0.2)
    stalls_before = _sample(STALLS, "_total")
    measured_before = _sample(STALL_DURATION, "_count")
    try:
        with caplog.at_level(logging.WARNING, logger=stalls.__name__):
            watch.start()
            time.sleep(0.3)  # turning: nothing to say
            assert _sample(STALLS, "_total") == stalls_before
            loop.call_soon_threadsafe(hold_the_loop_for, 1.0)
            deadline = time.monotonic() + 5
            while _sample(STALL_DURATION, "_count") == measured_before:
                assert time.monotonic() < deadline, "the stall was never measured"
                time.sleep(0.05)
    finally:
        watch.stop()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
    assert _sample(STALLS, "_total") == stalls_before + 1
    assert _sample(STALL_DURATION, "_sum") >= 0.7
    seen = [r.getMessage() for r in caplog.records]
    assert any("has not turned" in m and "hold_the_loop_for" in m for m in seen), seen
    assert any("turns again" in m for m in seen), seen
