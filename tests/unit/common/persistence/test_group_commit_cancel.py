"""A caller that gives up on a group-committed write never harms the writer or the others;
the requests queued while the writer waits for the database join its group."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from typing import Any

from services.common.persistence.group_commit import GroupCommitter, ShuttingDown


class _SlowDb:
    """Just enough of Database for GroupCommitter: a write_core() context that takes its time."""

    def __init__(self, gate: threading.Event) -> None:
        self.gate = gate
        #: Set once a transaction has begun to wait at the gate.
        self.entered = threading.Event()

    def write_core(self) -> Any:
        gate, entered = self.gate, self.entered

        class _Session:
            def __enter__(self) -> None:
                entered.set()
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


def test_requests_queued_while_the_writer_waits_for_the_database_join_its_group() -> None:
    gate = threading.Event()
    groups: list[list[int]] = []

    def write_group(_session: object, requests: Sequence[int]) -> list[int]:
        groups.append(list(requests))
        return [r * 10 for r in requests]

    db = _SlowDb(gate)
    committer: GroupCommitter[int, int] = GroupCommitter(db, write_group)  # type: ignore[arg-type]
    committer.start()
    try:
        first = committer.submit_future(1)
        assert db.entered.wait(5)  # its transaction has begun, and waits for the database
        later = [committer.submit_future(n) for n in (2, 3)]
        gate.set()
        assert [f.result(5) for f in (first, *later)] == [10, 20, 30]
        assert groups == [[1, 2, 3]]  # one commit, not two
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


def test_callers_on_a_loop_are_answered_and_one_that_gave_up_is_not_written() -> None:
    gate = threading.Event()
    written: list[int] = []

    def record(_session: object, requests: Sequence[int]) -> list[int | Exception]:
        written.extend(requests)
        return [ValueError("odd") if r % 2 else r * 10 for r in requests]

    committer: GroupCommitter[int, int] = GroupCommitter(_SlowDb(gate), record)  # type: ignore[arg-type]
    committer.start()

    async def scenario() -> None:
        first = asyncio.ensure_future(committer.write(2))  # taken at once; waits at the gate
        await asyncio.sleep(0)  # queued
        while not committer._queue.empty():  # the writer took it
            await asyncio.sleep(0.001)
        given_up = asyncio.ensure_future(committer.write(4))
        kept = [asyncio.ensure_future(committer.write(n)) for n in (6, 7, 8)]
        await asyncio.sleep(0.01)
        given_up.cancel()
        gate.set()
        assert await first == 20
        results = await asyncio.gather(*kept, return_exceptions=True)
        assert results[0] == 60 and isinstance(results[1], ValueError) and results[2] == 80
        assert 4 not in written  # cancelled before its group was taken
        assert await committer.write(10) == 100

    try:
        asyncio.run(scenario())
        assert committer.is_alive()
    finally:
        committer.stop()


def test_a_caller_on_a_loop_is_refused_once_stopping() -> None:
    gate = threading.Event()
    gate.set()
    committer: GroupCommitter[int, int] = GroupCommitter(_SlowDb(gate), _echo)  # type: ignore[arg-type]
    committer.start()
    committer.stop()

    async def late() -> None:
        try:
            await committer.write(1)
        except ShuttingDown:
            return
        raise AssertionError("a write after stop was answered as if committed")

    asyncio.run(late())


def test_an_outcome_asyncio_refuses_leaves_the_other_callers_answered() -> None:
    gate = threading.Event()
    gate.set()

    def odd_outcomes(_session: object, requests: Sequence[int]) -> list[int | Exception]:
        return [StopIteration() if r == 1 else r * 10 for r in requests]  # asyncio refuses it

    committer: GroupCommitter[int, int] = GroupCommitter(_SlowDb(gate), odd_outcomes)  # type: ignore[arg-type]
    committer.start()

    async def scenario() -> list[object]:
        writes = (committer.write(n) for n in (1, 2, 3))
        return await asyncio.gather(*writes, return_exceptions=True)

    try:
        refused, second, third = asyncio.run(asyncio.wait_for(scenario(), 5))
        assert isinstance(refused, RuntimeError) and (second, third) == (20, 30)
    finally:
        committer.stop()


def test_a_write_group_that_miscounts_fails_its_group_and_the_writer_lives_on() -> None:
    gate = threading.Event()
    gate.set()
    calls = []

    def miscount(_session: object, requests: Sequence[int]) -> list[int]:
        calls.append(list(requests))
        return [] if len(calls) == 1 else [r * 10 for r in requests]

    committer: GroupCommitter[int, int] = GroupCommitter(_SlowDb(gate), miscount)  # type: ignore[arg-type]
    committer.start()
    try:
        try:
            committer.submit(1)
        except RuntimeError as exc:
            assert "answered 0 of 1" in str(exc)
        else:
            raise AssertionError("a group nobody was answered for was reported as written")
        assert committer.submit(2) == 20
    finally:
        committer.stop()
