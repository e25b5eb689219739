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
of commits into time on a CPU, time runnable but waiting for one (the machine's CPUs are
busy), and the rest: blocked, which for a commit is the disk's sync.
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
from typing import Any

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
        """Stop committing; the latencies (summary_ms), or {"error": ...} if it failed."""
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
    slowest = probe.get("slowest")
    if not slowest:
        return figures
    return (
        f"{figures}; of the slowest 5%'s time, {slowest['blocked_share']:.0%} blocked (the disk's "
        f"sync), {slowest['run_queue_share']:.0%} waiting for a CPU, the rest on one"
    )


def split_slowest(commits: list[tuple[float, float, float]]) -> dict[str, float] | None:
    """Of the slowest SLOWEST_SHARE of (seconds, on-CPU, waiting for a CPU) commits: the
    share of their time spent waiting for a CPU, and blocked (None: too few, or unknown)."""
    known = sorted(c for c in commits if c[1] >= 0)
    slowest = known[int(len(known) * (1 - SLOWEST_SHARE)) :]
    total = sum(c[0] for c in slowest)
    if len(known) < 20 or total <= 0:
        return None
    on_cpu = sum(c[1] for c in slowest)
    run_queue = sum(c[2] for c in slowest)
    return {
        "commits": len(slowest),
        "run_queue_share": round(run_queue / total, 3),
        "blocked_share": round(max(0.0, total - on_cpu - run_queue) / total, 3),
    }


def _scheduled() -> tuple[float, float]:
    """This thread's seconds on a CPU and runnable waiting for one ((-1, -1): not Linux)."""
    try:
        with open("/proc/thread-self/schedstat") as stat:
            on_cpu, waiting, _ = stat.read().split()
    except (OSError, ValueError):
        return (-1.0, -1.0)
    return (int(on_cpu) / 1e9, int(waiting) / 1e9)


def commit_latencies(directory: Path, interval_s: float) -> list[tuple[float, float, float]]:
    """Commit one row every `interval_s` until stdin closes; each commit's seconds, and of
    them the seconds on a CPU and waiting for one (-1 where unknown)."""
    path = directory / f"commit-probe-{os.getpid()}.db"
    connection = sqlite3.connect(path, isolation_level=None)
    latencies: list[tuple[float, float, float]] = []
    try:
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute("PRAGMA synchronous=FULL")
        connection.execute("PRAGMA wal_autocheckpoint=0")  # no checkpoint inside a commit
        connection.execute("CREATE TABLE IF NOT EXISTS probe (id INTEGER PRIMARY KEY, row BLOB)")
        row = b"x" * 200  # about an order's row
        while not select.select([sys.stdin], [], [], interval_s)[0]:
            cpu_before, waiting_before = _scheduled()
            began = time.perf_counter()
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("INSERT INTO probe (row) VALUES (?)", (row,))
            connection.execute("COMMIT")
            took = time.perf_counter() - began
            cpu_after, waiting_after = _scheduled()
            known = cpu_before >= 0 and cpu_after >= 0
            latencies.append(
                (took, cpu_after - cpu_before, waiting_after - waiting_before)
                if known
                else (took, -1.0, -1.0)
            )
    finally:
        connection.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    return latencies


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.commit_probe", description=__doc__)
    parser.add_argument("directory", type=Path, help="where the probe's SQLite file goes")
    parser.add_argument("--interval-ms", type=float, default=INTERVAL_MS)
    args = parser.parse_args(argv)
    commits = commit_latencies(args.directory, args.interval_ms / 1000)
    result: dict[str, Any] = dict(summary_ms([c[0] for c in commits]))
    result["slowest"] = split_slowest(commits)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
