"""Threads carry their Python names in the kernel (what `top -H` and /proc show)."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.observability.thread_names import (
    NAME_LIMIT,
    kernel_name,
    name_threads_natively,
)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def kernel_name_of(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().rstrip("\n")


@pytest.fixture
def hooked() -> Iterator[None]:
    name_threads_natively()
    try:
        yield
    finally:
        threading.setprofile(None)  # type: ignore[arg-type]


def run_thread(name: str) -> dict[str, object]:
    """Start a thread named `name`; what it saw of itself while it ran."""
    seen: dict[str, object] = {}

    def body() -> None:
        seen["native_id"] = threading.get_native_id()
        seen["kernel_name"] = kernel_name_of(threading.get_native_id())
        seen["profile_left"] = sys.getprofile()

    thread = threading.Thread(target=body, name=name)
    thread.start()
    thread.join(5)
    return seen


def test_kernel_keeps_fifteen_bytes_and_never_half_a_character() -> None:
    assert kernel_name("group-commit") == b"group-commit"
    assert kernel_name("outbox-relay-deliveries") == b"outbox-relay-de"
    assert len(kernel_name("x" * 40)) == NAME_LIMIT
    # "é" is two bytes: the 15th byte would split it, so it is dropped whole.
    assert kernel_name("abcdefghijklmn" + "é") == b"abcdefghijklmn"


@linux_only
def test_a_thread_started_after_the_hook_has_its_python_name_in_the_kernel(hooked: None) -> None:
    seen = run_thread("group-commit")
    assert seen["kernel_name"] == "group-commit"


@linux_only
def test_a_long_name_is_cut_to_what_the_kernel_keeps(hooked: None) -> None:
    seen = run_thread("outbox-relay-deliveries")
    assert seen["kernel_name"] == "outbox-relay-de"


@linux_only
def test_the_hook_leaves_no_profiler_running_in_the_thread(hooked: None) -> None:
    seen = run_thread("event-consumer")
    assert seen["profile_left"] is None


@linux_only
def test_the_main_thread_keeps_the_process_name(hooked: None) -> None:
    before = kernel_name_of(threading.main_thread().native_id or 0)
    run_thread("grpc-loop")
    assert kernel_name_of(threading.main_thread().native_id or 0) == before


@linux_only
def test_without_the_hook_a_thread_keeps_the_process_name() -> None:
    process_name = kernel_name_of(threading.main_thread().native_id or 0)
    seen = run_thread("not-named")
    assert seen["kernel_name"] == process_name
