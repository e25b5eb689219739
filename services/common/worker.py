"""Background workers: one thread each, started and stopped by the service's GrpcApp."""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable

log = logging.getLogger(__name__)


class BackgroundWorker(ABC):
    """A part of the service that runs `_run` on its own thread until asked to stop.

    `_run` loops while `self._stopping` is not set; `stop()` sets it, calls `_wake()` (for
    a worker that sleeps on something else) and waits for the thread.
    """

    def __init__(self, name: str) -> None:
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stopping.set()
        self._wake()
        self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _wake(self) -> None:
        """Interrupt whatever `_run` waits on (nothing by default)."""
        return None

    @abstractmethod
    def _run(self) -> None: ...


class PeriodicWorker(BackgroundWorker):
    """Calls `step` every `interval_s` (at once again while it reports more work done).

    `step` returns how many items it handled; a step that raises is logged and retried
    after the interval: a worker never dies of one bad round.
    """

    def __init__(self, name: str, step: Callable[[], int], interval_s: float) -> None:
        super().__init__(name)
        self.name = name
        self.step = step
        self.interval_s = interval_s

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                if self.step():
                    continue
            except Exception:
                log.exception("background step failed; retrying", extra={"worker": self.name})
            self._stopping.wait(self.interval_s)
