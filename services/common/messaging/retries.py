"""Trying a failed consumer transaction again: exponential backoff with jitter, bounded in time.

A record whose handler fails (for a reason other than a rejected or undecodable event) is
tried again in place before it is dead-lettered, and a transient database error is tried
again before the batch is rewound. Each retry waits twice as long as the one before, half
of it at random (so replicas that failed together do not retry together), and all the
retries of one consumed batch share one time budget: a batch full of failing records
cannot hold its partitions for longer than that before they are dead-lettered.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a failed transaction is tried again."""

    #: Retries after the first try (0: none).
    retries: int = 3
    #: The wait before the first retry, in seconds; each later one waits twice as long.
    backoff_s: float = 0.1
    #: The most time one batch spends waiting between retries, in seconds.
    max_total_s: float = 10.0

    def budget(self) -> RetryBudget:
        """A fresh budget for one consumed batch."""
        return RetryBudget(self)


class RetryBudget:
    """The retries one consumed batch may still wait for (every part of it shares this)."""

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.policy = policy
        self._clock = clock
        self._sleep = sleep
        self._ends = clock() + policy.max_total_s

    def wait_before(self, retry: int) -> float | None:
        """The pause before retry number `retry` (from 1), or None: no retry is left (the
        policy's count is reached or the batch's time is spent)."""
        if retry > self.policy.retries:
            return None
        left = self._ends - self._clock()
        if left <= 0:
            return None
        full = self.policy.backoff_s * 2 ** (retry - 1)
        return min(left, full / 2 + random.uniform(0, full / 2))

    def pause(self, seconds: float) -> None:
        """Wait `seconds` (what wait_before said)."""
        if seconds > 0:
            self._sleep(seconds)
