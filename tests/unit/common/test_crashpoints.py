"""Crash points: armed only by PAYSAGA_CRASH_AT, they end the process at the n-th pass."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from services.common.crashpoints import CRASH_EXIT_CODE, crash_point

pytestmark = pytest.mark.unit

SCRIPT = """
from services.common.crashpoints import crash_point
for i in range(5):
    print(i, flush=True)
    crash_point("relay.after-publish")
    crash_point("consumer.after-db-commit")
"""


def run(spec: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PAYSAGA_CRASH_AT": spec}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )


def test_an_armed_point_exits_at_its_nth_pass() -> None:
    done = run("relay.after-publish:3")
    assert done.returncode == CRASH_EXIT_CODE
    assert done.stdout.split() == ["0", "1", "2"]


def test_an_unknown_point_is_refused_with_the_known_ones() -> None:
    done = run("relay.somewhere:1")
    assert done.returncode != 0 and "consumer.after-db-commit" in done.stderr


def test_unarmed_points_do_nothing() -> None:
    assert os.environ.get("PAYSAGA_CRASH_AT") is None
    crash_point("relay.after-publish")
