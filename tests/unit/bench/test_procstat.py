"""The bench's CPU meter: per process, and per thread by its kernel name."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from bench.procstat import (
    ENDED,
    CpuMeter,
    by_thread_name,
    cpu_seconds,
    thread_cpu_seconds,
    tree_cpu_seconds,
)
from bench.report import _threads
from services.common.observability.thread_names import set_current_thread_name


def spin_in_thread(
    name: str, seconds: float, release: threading.Event | None = None
) -> threading.Thread:
    """A thread named `name` that spends `seconds` of CPU, then (with `release`) stays alive
    until released."""

    def body() -> None:
        set_current_thread_name(name)
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass
        spun.set()
        if release is not None:
            release.wait(10)

    spun = threading.Event()

    thread = threading.Thread(target=body)
    thread.start()
    assert spun.wait(60), f"{name} did not spend {seconds} s of CPU within a minute"
    return thread


def test_threads_are_read_by_kernel_name() -> None:
    release = threading.Event()
    thread = spin_in_thread("bench-spinner", 0.05, release)
    names = {name for name, _ in thread_cpu_seconds(os.getpid()).values()}
    release.set()
    thread.join(10)
    assert "bench-spinner" in names


def test_the_meter_charges_a_busy_thread_to_its_name() -> None:
    meter = CpuMeter({"me": os.getpid()})
    meter.start()
    release = threading.Event()
    thread = spin_in_thread("bench-spinner", 0.4, release)
    used = meter.stop()  # while it lives: a thread gone by then is not counted
    release.set()
    thread.join(10)
    assert used["me"] is not None and used["me"] >= 0.3
    # A thread that started after start() counts in full; the tick is 10 ms.
    assert meter.threads["me"]["bench-spinner"] >= 0.3


def test_a_gone_process_has_no_threads() -> None:
    assert thread_cpu_seconds(2**22 + 12345) == {}


def test_names_are_summed_ranked_and_the_rest_folded() -> None:
    before = {
        (1, 100): ("grpc-loop", 10.0),
        (2, 100): ("grpc_0", 1.0),
        (3, 100): ("grpc_1", 1.0),
        (9, 100): ("gone", 5.0),
    }
    after = {
        (1, 100): ("grpc-loop", 14.0),  # 4.0
        (2, 100): ("grpc_0", 1.5),  # 0.5
        (3, 100): ("grpc_1", 2.0),  # 1.0
        (4, 300): ("group-commit", 3.0),  # new: all of it
        (5, 300): ("grpc_0", 0.25),  # new, same name as 2: summed with it
    }
    assert by_thread_name(before, after, top=2) == {
        "grpc-loop": 4.0,
        "group-commit": 3.0,
        "(other threads)": 1.75,
    }
    assert by_thread_name(before, after, top=10) == {
        "grpc-loop": 4.0,
        "group-commit": 3.0,
        "grpc_1": 1.0,
        "grpc_0": 0.75,
    }


def test_a_reused_thread_id_is_a_new_thread() -> None:
    before = {(7, 100): ("old-worker", 9.0)}
    after = {(7, 500): ("new-worker", 0.5)}  # same id, started later
    assert by_thread_name(before, after, top=5) == {"new-worker": 0.5}


def test_what_live_threads_do_not_account_for_is_shown_as_ended() -> None:
    before = {(1, 100): ("grpc-loop", 1.0), (2, 100): ("stop", 0.0)}
    after = {(1, 100): ("grpc-loop", 2.0)}  # "stop" ended after 0.3 s of CPU
    assert by_thread_name(before, after, top=5, process_s=1.3) == {
        "grpc-loop": 1.0,
        ENDED: 0.3,
    }
    # Within a tick or so of the process's own figure: nothing ended worth showing.
    assert by_thread_name(before, after, top=5, process_s=1.01) == {"grpc-loop": 1.0}


def test_the_report_shows_the_busy_threads_of_the_services_and_kafka_only() -> None:
    phase = {
        "cpu_threads_s": {
            "order-0-api": {"grpc-loop": 5.04, "group-commit": 4.2, "stall-watch": 0.02},
            "kafka": {"data-plane-kafk": 3.3},
            "loadgen": {"python": 9.0},
            "payment-0-worker": {},
            "payment-0-api": {"grpc-loop": 0.04, "python": 0.01},
        }
    }
    assert _threads(phase) == [
        (
            "  CPU by thread",
            "",
            "order-0-api: grpc-loop 5.0s, group-commit 4.2s; kafka: data-plane-kafk 3.3s",
        )
    ]
    assert _threads({"cpu_s": {}}) == []


SPIN = (
    "import time\nend = time.process_time() + {seconds}\n"
    "while time.process_time() < end: pass\nprint(time.process_time(), flush=True)\n"
)


def test_a_tree_counts_its_live_and_its_reaped_children() -> None:
    """PostgreSQL's connections are processes of their own: the meter counts them under
    "postgres" (CpuMeter.TREES), whether they live on or ended during the window."""
    before_tree, before_alone = tree_cpu_seconds(os.getpid()), cpu_seconds(os.getpid())
    live = [sys.executable, "-c", SPIN.format(seconds=0.3) + "input()"]
    alive = subprocess.Popen(live, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        reaped = subprocess.run(
            [sys.executable, "-c", SPIN.format(seconds=0.3)],
            check=True,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert alive.stdout is not None
        live_s = float(alive.stdout.readline())  # it has spun, and waits for its input
        after_tree, after_alone = tree_cpu_seconds(os.getpid()), cpu_seconds(os.getpid())
    finally:
        try:
            alive.communicate("\n", timeout=30)
        except subprocess.TimeoutExpired:
            alive.kill()
            alive.wait()
    assert before_tree is not None and after_tree is not None
    assert before_alone is not None and after_alone is not None
    spent = live_s + float(reaped.stdout)
    # Both children's CPU is in the tree's figure (/proc counts whole ticks of 10 ms, which
    # utime, stime, cutime and cstime may each lose one of), not in the process's own.
    assert after_tree - before_tree >= spent - 0.05
    assert after_alone - before_alone < 0.3


def test_a_process_whose_name_is_not_utf8_is_read() -> None:
    name_self = (
        "import ctypes, sys\n"
        "ctypes.CDLL(None).prctl(15, ctypes.c_char_p(b'bad\\xff\\xfename'), 0, 0, 0)\n"
        "print('named', flush=True)\ninput()\n"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", name_self], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "named"
        with open(f"/proc/{child.pid}/comm", "rb") as comm:
            assert comm.read().startswith(b"bad\xff")
        assert tree_cpu_seconds(os.getpid()) is not None
        assert cpu_seconds(child.pid) is not None
    finally:
        child.communicate("\n", timeout=30)


def test_the_meter_shows_no_threads_for_a_tree() -> None:
    meter = CpuMeter({"postgres": os.getpid(), "me": os.getpid()})
    meter.start()
    used = meter.stop()
    assert used["postgres"] is not None
    assert "postgres" not in meter.threads and "me" in meter.threads


def test_a_gone_process_has_no_tree() -> None:
    assert tree_cpu_seconds(2**22 + 12345) is None
