"""Crash points under load: each service stops at each armed line it passes, then recovers.

For each service, one load runs while the service is restarted, in turn, armed at each
crash point it passes (PAYSAGA_CRASH_AT=<point>:<n>): it exits with status 70 the n-th
time it passes the point, between two lines a real crash could split, and is started
again without the variable. At the end every invariant must hold: nothing lost, nothing
charged twice. The armed restart follows a kill -9, so the crash point is the only way
the armed process ends.
"""

from __future__ import annotations

import time

import pytest

from deploy.stack.processes import ServiceProcess
from services.common.crashpoints import CRASH_EXIT_CODE
from tests.faults.scenario import Scenario, assert_holds
from tests.faults.stack import FaultStack

pytestmark = pytest.mark.faults

BEFORE_S = 3.0  # load before the first armed restart
BETWEEN_S = 2.0  # load after each disarmed restart
CRASH_WAIT_S = 90.0  # an armed process starting on 2 busy cores, then reaching its point
CRASH_LOG = "crash point reached"

#: The crash points each service passes, with the pass to crash at (small: it comes soon).
POINTS = {
    "order": [
        ("consumer.after-db-commit", 5),
        ("relay.after-publish", 5),
        ("group-commit.before-commit", 10),
        ("group-commit.after-commit", 10),
    ],
    "payment": [
        ("consumer.after-db-commit", 5),
        ("relay.after-publish", 5),
        ("payment.after-debit", 10),
    ],
}


def _crash_lines(proc: ServiceProcess, point: str) -> int:
    """How many times the replica's log says it stopped at `point`."""
    if not proc.log_file.exists():
        return 0
    lines = proc.log_file.read_text(errors="replace").splitlines()
    return sum(1 for line in lines if CRASH_LOG in line and f'"{point}"' in line)


def _run_armed_until_crash(proc: ServiceProcess, point: str, n: int) -> int | None:
    """Start `proc` armed at `point`:`n`, wait until it has exited; its exit status."""
    plain_env = proc.env
    proc.env = {**plain_env, "PAYSAGA_CRASH_AT": f"{point}:{n}"}
    try:
        proc.start()
    finally:
        proc.env = plain_env  # every later start runs without the crash point
    pid = proc.pid()
    assert pid is not None, f"{proc.name} did not start armed\n{proc.log_tail()}"
    if not proc.wait_exit(pid, CRASH_WAIT_S):
        proc.kill()
        raise AssertionError(
            f"{proc.name} armed at {point}:{n} still ran after {CRASH_WAIT_S:.0f}s\n"
            f"{proc.log_tail()}"
        )
    # The stack started this child, so its exit status is ours to read. wait(), not
    # poll(): the thread-group leader shows as a zombie while its other threads still exit.
    child = proc._proc
    return None if child is None else child.wait(timeout=30)


@pytest.mark.parametrize("service", sorted(POINTS))
def test_crash_at_each_point_under_load(stack: FaultStack, service: str) -> None:
    proc = stack.process(service)
    wrong: list[str] = []
    with Scenario(stack, f"crash points of {service} (x{len(POINTS[service])})") as run:
        time.sleep(BEFORE_S)
        for point, n in POINTS[service]:
            crashes_before = _crash_lines(proc, point)
            proc.kill()
            status = _run_armed_until_crash(proc, point, n)
            crashes = _crash_lines(proc, point) - crashes_before
            if status != CRASH_EXIT_CODE or crashes != 1:
                wrong.append(
                    f"{point}:{n}: exit status {status} (expected {CRASH_EXIT_CODE}), "
                    f"{crashes} '{CRASH_LOG}' line(s) in the log (expected 1)"
                )
            stack.restart(service)
            time.sleep(BETWEEN_S)
        run.mark_recovering()
        outcome = run.finish()
    assert_holds(outcome, stack)
    assert not wrong, "\n".join([f"{proc.name} did not stop at its crash point:", *wrong])
