"""The disk's commit latency, measured beside a phase: the floor under every figure that
waits for a commit.

`CommitProbe` runs `python -m bench.commit_probe DIR` while a phase runs. The child commits
one small row at a time to a SQLite file of its own in DIR, with the services' settings
(WAL, `synchronous=FULL`: each commit waits for the disk), every `--interval-ms`, until its
stdin closes; then it prints the commits' latencies as one JSON line. It is a process of
its own so that nothing of the bench (its GIL, its event loop) is in the figure: only the
disk and the machine's scheduling under the phase's load. A CreateOrder is answered after
its commit, so no service on this disk can answer faster than this probe commits at the
same moment; read a latency figure next to it.

Where Linux tells it (`/proc/thread-self/schedstat`), the probe also splits its slowest 5%
of commits into time on a CPU (`time.thread_time`), time runnable but waiting for one (the
machine's CPUs are busy), and the rest: blocked, which for a commit is I/O, mostly the
disk's sync (`slowest_split` in its result).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import select
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from bench.stats import summary_ms

#: The share of commits, slowest first, whose time is split into CPU and disk.
SLOWEST_SHARE = 0.05
#: One commit every 50 ms: 20 a second, few beside the services' own, yet 600 in a
#: 30-second phase, enough for a p99.
INTERVAL_MS = 50.0


class CommitProbe:
    """The child process that commits beside a phase."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @classmethod
    async def start(cls, directory: Path, interval_ms: float = INTERVAL_MS) -> CommitProbe:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.commit_probe",
            str(directory),
            "--interval-ms",
            str(interval_ms),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        return cls(process)

    async def stop(self) -> dict[str, Any]:
        """Stop committing; the latencies (summary_ms) and `slowest_split` (split_slowest),
        or {"error": ...} if it failed."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            out, _ = await asyncio.wait_for(self.process.communicate(), 10.0)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()
            return {"error": "the commit probe did not stop within 10 s"}
        try:
            result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"error": f"the commit probe exited ({self.process.returncode}) with no result"}
        return result


def describe(probe: dict[str, Any] | None) -> str:
    """A probe's figures for the table."""
    if not probe:
        return "not measured"
    if "error" in probe:
        return probe["error"]
    if not probe.get("samples"):
        return "no commit measured (the phase was shorter than the probe's interval)"
    figures = (
        f"p50 {probe['p50_ms']} / p99 {probe['p99_ms']} / max {probe['max_ms']} ms over "
        f"{probe['samples']} commits"
    )
    split = probe.get("slowest_split")
    if not split:
        return figures
    return (
        f"{figures}; of the slowest {SLOWEST_SHARE:.0%}'s time, {split['blocked_share']:.0%} "
        f"blocked (I/O: mostly the disk's sync), {split['run_queue_share']:.0%} waiting for a "
        "CPU, the rest on one"
    )


class Commit(NamedTuple):
    """One probe commit: its latency, and a window around it (`span`, a little longer:
    it includes reading the counters) split into time on a CPU and waiting for one (-1
    where the run-queue wait is not known)."""

    seconds: float
    span: float
    on_cpu: float
    run_queue: float


def split_slowest(commits: list[Commit]) -> dict[str, float] | None:
    """Of the slowest SLOWEST_SHARE of commits (by latency): the share of their windows spent
    waiting for a CPU, and blocked (None: fewer than 20 commits with a known wait)."""
    known = sorted(c for c in commits if c.run_queue >= 0)
    slowest = known[int(len(known) * (1 - SLOWEST_SHARE)) :]
    total = sum(c.span for c in slowest)
    if len(known) < 20 or total <= 0:
        return None
    on_cpu = sum(c.on_cpu for c in slowest)
    run_queue = sum(c.run_queue for c in slowest)
    return {
        "commits": len(slowest),
        "run_queue_share": round(run_queue / total, 3),
        "blocked_share": round(max(0.0, total - on_cpu - run_queue) / total, 3),
    }


def _run_queue_wait() -> float:
    """This thread's seconds runnable but waiting for a CPU, from Linux's schedstat (-1:
    not known: no such file, or scheduler statistics off, which reads as all zeros)."""
    try:
        with open("/proc/thread-self/schedstat") as stat:
            _on_cpu, waiting, timeslices = stat.read().split()
    except (OSError, ValueError):
        return -1.0
    if int(timeslices) == 0:  # a running thread has had at least one
        return -1.0
    return int(waiting) / 1e9


def commit_latencies(directory: Path, interval_s: float) -> list[Commit]:
    """Commit one row every `interval_s` until stdin closes; each commit as a `Commit`."""
    path = directory / f"commit-probe-{os.getpid()}.db"
    connection = sqlite3.connect(path, isolation_level=None)
    commits: list[Commit] = []
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA wal_autocheckpoint=0")  # no checkpoint inside a commit
        connection.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, row BLOB)")
        row = b"x" * 200  # about an order's row
        while not select.select([sys.stdin], [], [], interval_s)[0]:
            opened = time.perf_counter()
            waited_before, cpu_before = _run_queue_wait(), time.thread_time()
            began = time.perf_counter()
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO probe (row) VALUES (?)", (row,))
            connection.execute("COMMIT")
            took = time.perf_counter() - began
            cpu_after, waited_after = time.thread_time(), _run_queue_wait()
            span = time.perf_counter() - opened
            known = waited_before >= 0 and waited_after >= 0
            commits.append(
                Commit(
                    took,
                    span,
                    cpu_after - cpu_before,
                    waited_after - waited_before if known else -1.0,
                )
            )
    finally:
        connection.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return commits


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.commit_probe", description=__doc__)
    parser.add_argument("directory", type=Path, help="where the probe's SQLite file goes")
    parser.add_argument("--interval-ms", type=float, default=INTERVAL_MS)
    args = parser.parse_args(argv)
    commits = commit_latencies(args.directory, args.interval_ms / 1000)
    result: dict[str, Any] = dict(summary_ms([c.seconds for c in commits]))
    result["slowest_split"] = split_slowest(commits)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
