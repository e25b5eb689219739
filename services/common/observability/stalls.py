"""Stalls of a process's event loop: when it has not turned for a while, what it was doing.

Every call a service serves (CreateOrder, reads, WatchOrders, health) waits on one event
loop, so a piece of work that holds it, or holds the interpreter lock, delays them all. A
callback on the loop stamps the time every INTERVAL_S; a daemon thread looks at the stamp
as often. When the loop has not turned for STALL_S, the thread takes the loop thread's
stack at that moment and logs it at WARNING (at most once a LOG_EVERY_S: the others are
counted only), and when the loop turns again the stall's length is observed:
`paysaga_event_loop_stalls_total` and `paysaga_event_loop_stall_seconds`
(docs/observability.md). The cost: ten callbacks and ten thread wake-ups a second.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import threading
import time
import traceback

from prometheus_client import Counter, Histogram

log = logging.getLogger(__name__)

#: How often the loop stamps the time, and the watcher looks at the stamp.
INTERVAL_S = 0.1
#: A loop that has not turned for this long is stalled.
STALL_S = 0.5
#: At most one stack logged per this many seconds.
LOG_EVERY_S = 60.0

STALLS = Counter(
    "paysaga_event_loop_stalls_total",
    "Times the serving event loop did not turn for 0.5 s or more (a piece of work held it "
    "or the interpreter lock: every call waited behind it).",
)
STALL_DURATION = Histogram(
    "paysaga_event_loop_stall_seconds",
    "How long each stall of the serving event loop lasted.",
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60),
)


class StallWatch:
    """Watches one event loop; `start()` once it runs, `stop()` before it stops."""

    def __init__(self, loop: asyncio.AbstractEventLoop, stall_s: float = STALL_S) -> None:
        self.loop = loop
        self.stall_s = stall_s
        self._stamp = time.monotonic()
        self._loop_thread: int | None = None
        self._stalled_since: float | None = None
        self._logged_at = -LOG_EVERY_S
        self._lock = threading.Lock()  # the stamp and the stall, between loop and watcher
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="stall-watch", daemon=True)

    def start(self) -> None:
        self.loop.call_soon_threadsafe(self._beat)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        """On the loop: stamp the time; end a stall the watcher saw."""
        now = time.monotonic()
        self._loop_thread = threading.get_ident()
        with self._lock:
            since, self._stalled_since = self._stalled_since, None
            self._stamp = now
        if since is not None:
            STALL_DURATION.observe(now - since)
            log.warning("the event loop turns again", extra={"stalled_s": round(now - since, 3)})
        if not self._stop.is_set():
            self.loop.call_later(INTERVAL_S, self._beat)

    def _watch(self) -> None:
        """On its own thread: see a stall begin, and say what the loop is doing."""
        while not self._stop.wait(INTERVAL_S):
            with self._lock:
                stamp, now = self._stamp, time.monotonic()
                if self._stalled_since is not None or now - stamp < self.stall_s + INTERVAL_S:
                    continue
                self._stalled_since = stamp + INTERVAL_S  # when its next turn was due
            STALLS.inc()
            if now - self._logged_at >= LOG_EVERY_S:
                self._logged_at = now
                log.warning(
                    "the event loop has not turned for %.1f s; it is running:\n%s",
                    now - stamp,
                    self._loop_stack(),
                )

    def _loop_stack(self) -> str:
        frame = sys._current_frames().get(self._loop_thread or 0)
        if frame is None:
            return "(the loop's thread is not known)"
        return "".join(traceback.format_stack(frame, limit=30))
