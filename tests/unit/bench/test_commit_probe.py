"""The commit probe: a child process that commits beside a phase, and its figures in the report."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bench.commit_probe import CommitProbe, describe
from bench.report import summary

pytestmark = pytest.mark.unit


def test_the_probe_commits_until_stopped_and_leaves_no_file(tmp_path: Path) -> None:
    async def probe_for(seconds: float) -> dict[str, object]:
        probe = await CommitProbe.start(tmp_path, interval_ms=10)
        await asyncio.sleep(seconds)
        return await probe.stop()

    result = asyncio.run(probe_for(1.0))
    assert isinstance(result["samples"], int) and result["samples"] >= 5, result
    assert 0 < result["p50_ms"] <= result["p99_ms"] <= result["max_ms"]  # type: ignore[operator]
    assert describe(result).endswith(f"over {result['samples']} commits")
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
