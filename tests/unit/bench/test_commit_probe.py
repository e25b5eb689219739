"""The commit probe: a child process that commits beside a phase, and its figures in the report."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.commit_probe import Commit, CommitProbe, describe, split_slowest
from bench.report import summary

pytestmark = pytest.mark.unit


def probe_for(directory: Path, seconds: float, interval_ms: float) -> dict[str, object]:
    """What a live probe in `directory` reports after `seconds`."""

    async def run() -> dict[str, object]:
        probe = await CommitProbe.start(directory, interval_ms=interval_ms)
        await asyncio.sleep(seconds)
        return await probe.stop()

    return asyncio.run(run())


def test_the_probe_commits_until_stopped_and_leaves_no_file(tmp_path: Path) -> None:
    result = probe_for(tmp_path, 1.0, interval_ms=10)
    assert isinstance(result["samples"], int) and result["samples"] >= 5, result
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]  # type: ignore[operator]
    assert f"over {result['samples']} commits" in describe(result)
    assert list(tmp_path.iterdir()) == [], "the probe's database is removed"


def test_a_probe_that_failed_says_so() -> None:
    assert describe({"error": "the commit probe exited (1) with no result"}).startswith(
        "the commit probe exited"
    )
    assert describe(None) == "not measured"
    assert describe({"samples": 0, "p50_ms": None}).startswith("no commit measured")


def test_the_summary_names_the_disk_beside_the_latencies() -> None:
    figures = summary(
        {
            "disk_commit_idle": {"p99_ms": 0.9},
            "all_orders": {"disk_commit": {"p99_ms": 44.0}},
            "latency": {"disk_commit": {"p99_ms": 12.0}},
        }
    )
    assert figures["disk_commit_idle_p99_ms"] == 0.9
    assert figures["lone_disk_commit_p99_ms"] == 44.0
    assert figures["latency_disk_commit_p99_ms"] == 12.0


def test_the_slowest_commits_are_split_into_waiting_for_a_cpu_and_blocked() -> None:
    fast = [Commit(0.001, 0.0012, 0.0005, 0.0)] * 95
    slow = [Commit(0.100, 0.100, 0.002, 0.028)] * 5  # the slowest 5%: 0.5 s, 0.14 s for a CPU
    split = split_slowest(fast + slow)
    assert split == {"commits": 5, "run_queue_share": 0.28, "blocked_share": 0.7}
    figures = {"p50_ms": 1, "p99_ms": 100, "max_ms": 200, "samples": 100, "slowest_split": split}
    assert describe(figures).endswith(
        "of the slowest 5%'s time, 70% blocked (I/O: mostly the disk's sync), "
        "28% waiting for a CPU, the rest on one"
    )


def test_blocked_time_is_never_negative() -> None:
    """Counters that tick coarsely may give a window more CPU and wait than its length."""
    commits = [Commit(0.001, 0.001, 0.001, 0.0)] * 95 + [Commit(0.01, 0.01, 0.008, 0.004)] * 5
    assert split_slowest(commits) == {"commits": 5, "run_queue_share": 0.4, "blocked_share": 0.0}


def test_no_split_without_a_known_wait_or_with_too_few_commits() -> None:
    unknown = [Commit(0.1, 0.1, 0.01, -1.0)] * 100
    assert split_slowest(unknown) is None
    assert split_slowest([Commit(0.1, 0.1, 0.01, 0.01)] * 19 + unknown) is None
    assert split_slowest([Commit(0.1, 0.1, 0.01, 0.01)] * 10) is None


def test_a_live_probe_splits_its_slowest_commits_on_linux(tmp_path: Path) -> None:
    result = probe_for(tmp_path, 1.0, interval_ms=5)
    samples = result["samples"]
    assert isinstance(samples, int)
    if not Path("/proc/thread-self/schedstat").exists() or samples < 20:
        assert result["slowest_split"] is None  # not Linux, or a disk too slow for 20 commits
        return
    split = result["slowest_split"]
    assert isinstance(split, dict) and split["commits"] >= 1, result
    assert 0 <= split["run_queue_share"] <= 1 and 0 <= split["blocked_share"] <= 1
