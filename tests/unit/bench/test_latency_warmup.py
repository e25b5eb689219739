"""The latency phase's warm-up offers the same load first and measures none of it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.saga import latency_phase


class _Watcher:
    terminal = 0
    pending = 0


class _Maker:
    """Every order ends at once; counts the orders made."""

    def __init__(self) -> None:
        self.watcher = _Watcher()
        self.made = 0

    async def create(self) -> tuple[float, asyncio.Future[float]]:
        self.made += 1
        self.watcher.terminal += 1
        ended: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        ended.set_result(time.perf_counter())
        return time.perf_counter(), ended


class _Cpu:
    threads: dict[str, dict[str, float]] = {}

    def start(self) -> None:
        pass

    def stop(self) -> dict[str, Any]:
        return {}


def _phase(warmup_s: float) -> tuple[dict[str, Any], int]:
    maker = _Maker()
    result = asyncio.run(
        latency_phase(
            maker,  # type: ignore[arg-type]
            _Cpu(),  # type: ignore[arg-type]
            rate=100,
            duration_s=0.2,
            drain_timeout_s=1.0,
            warmup_s=warmup_s,
        )
    )
    return result, maker.made


def test_the_warm_up_orders_are_made_and_not_measured() -> None:
    result, made = _phase(warmup_s=0.3)
    assert made == 30 + 20
    assert result["sent"] == result["finished"] == 20
    assert result["warmup_s"] == 0.3


def test_without_a_warm_up_every_order_is_measured() -> None:
    result, made = _phase(warmup_s=0.0)
    assert made == result["sent"] == result["finished"] == 20
