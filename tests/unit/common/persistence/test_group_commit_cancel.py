"""A caller that gives up on a group-committed write never harms the writer or the others."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from services.common.persistence.group_commit import GroupCommitter, ShuttingDown


class _SlowDb:
    """Just enough of Database for GroupCommitter: a write() context that takes its time."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate

    def write(self) -> Any:
        gate = self.gate

        class _Session:
            def __enter__(self) -> None:
                gate.wait(5)

            def __exit__(self, *_: object) -> None:
                return None

        return _Session()


def _echo(_session: object, requests: Sequence[int]) -> list[int]:
    return [r * 10 for r in requests]


def test_a_cancelled_caller_is_skipped_and_the_writer_lives_on() -> None:
    gate = threading.Event()
    committer: GroupCommitter[int, int] = GroupCommitter(_SlowDb(gate), _echo)  # type: ignore[arg-type]
    committer.start()
    try:
        first = committer.submit_future(1)  # taken at once; waits at the gate
        while not first.running():
            pass
        assert not first.cancel()  # being written: can no longer be cancelled
        given_up = committer.submit_future(2)
        kept = committer.submit_future(3)
        assert given_up.cancel()
        gate.set()
        assert first.result(5) == 10
        assert kept.result(5) == 30
        assert committer.submit(4) == 40
        assert committer.is_alive()
    finally:
        committer.stop()


def test_a_write_submitted_while_stopping_is_refused_not_lost() -> None:
    gate = threading.Event()
    gate.set()
    committer: GroupCommitter[int, int] = GroupCommitter(_SlowDb(gate), _echo)  # type: ignore[arg-type]
    committer.start()
    committer.stop()
    late = committer._queue  # a put that raced the writer's exit
    from services.common.persistence.group_commit import _Pending

    pending: _Pending[int, int] = _Pending(5)
    late.put(pending)
    committer._refuse_leftovers()
    try:
        pending.future.result(1)
    except ShuttingDown:
        pass
    else:
        raise AssertionError("a late write was answered as if committed")
