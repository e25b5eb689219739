"""A background worker that runs one step again and again on its own thread."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


class PeriodicWorker:
    """Calls `step` every `interval_s` (at once again while it reports more work done).

    `step` returns how many items it handled; a step that raises is logged and retried
    after the interval: a worker never dies of one bad round.
    """

    def __init__(self, name: str, step: Callable[[], int], interval_s: float) -> None:
        self.name = name
        self.step = step
        self.interval_s = interval_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self.step():
                    continue
            except Exception:
                log.exception("background step failed; retrying", extra={"worker": self.name})
            self._stopping.wait(self.interval_s)
