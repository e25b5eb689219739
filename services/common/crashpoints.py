"""Crash points a fault test can arm, to kill a process at an exact line.

`PAYSAGA_CRASH_AT=<point>:<n>` (read once, at start) makes the process exit at once
(`os._exit`, no cleanup, like kill -9) the n-th time it passes `crash_point("<point>")`.
Unset, a crash point costs one comparison. The points:

- `consumer.after-db-commit`: a batch is committed in the database, its offsets are not;
- `relay.after-publish`: the broker confirmed outbox rows that are not yet deleted;
- `payment.after-debit`: a balance was debited in a transaction not yet committed;
- `group-commit.before-commit`: CreateOrder rows are written, their transaction not
  committed;
- `group-commit.after-commit`: CreateOrder rows are committed, the callers not answered.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger(__name__)

POINTS = (
    "consumer.after-db-commit",
    "relay.after-publish",
    "payment.after-debit",
    "group-commit.before-commit",
    "group-commit.after-commit",
)

#: Exit status of a process that stopped at a crash point.
CRASH_EXIT_CODE = 70


def _armed() -> tuple[str, int] | None:
    spec = os.environ.get("PAYSAGA_CRASH_AT", "")
    if not spec:
        return None
    point, _, count = spec.partition(":")
    if point not in POINTS:
        raise ValueError(f"PAYSAGA_CRASH_AT names no crash point {point!r}: one of {POINTS}")
    return point, int(count or "1")


_ARMED = _armed()
_passes = 0
_lock = threading.Lock()


def crash_point(name: str) -> None:
    """Exit the process here if the armed crash point is `name` and its count is reached."""
    global _passes
    if _ARMED is None or _ARMED[0] != name:
        return
    with _lock:
        _passes += 1
        if _passes < _ARMED[1]:
            return
    log.critical("crash point reached: exiting at once", extra={"point": name})
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(CRASH_EXIT_CODE)
