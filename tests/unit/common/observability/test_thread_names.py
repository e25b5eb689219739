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

#: Threads name themselves through /proc/thread-self: Linux only (CI runs on Linux).
linux_only = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="/proc/thread-self is Linux's"
)


def kernel_name_of(native_id: int) -> str:
    return Path(f"/proc/self/task/{native_id}/comm").read_text().rstrip("\n")


@pytest.fixture
def unhooked() -> Iterator[None]:
    """No thread-start profile hook, whatever an earlier test installed; put back after."""
    before = threading.getprofile()
    threading.setprofile(None)  # type: ignore[arg-type]
    try:
        yield
    finally:
        threading.setprofile(before)  # type: ignore[arg-type]


@pytest.fixture
def hooked(unhooked: None) -> None:
    assert name_threads_natively()


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
    assert kernel_name("lone \udc80 surrogate") == b"lone ? surrogat"


@linux_only
def test_a_name_the_kernel_refuses_leaves_the_thread_running(
    hooked: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(self: Path, data: bytes) -> int:
        raise PermissionError("read-only /proc")

    monkeypatch.setattr(Path, "write_bytes", refuse)
    seen = run_thread("group-commit")
    assert seen["native_id"]  # its body ran
    assert seen["kernel_name"] != "group-commit"


@linux_only
def test_hooking_twice_hooks_once(hooked: None) -> None:
    hook = threading.getprofile()
    assert name_threads_natively()
    assert threading.getprofile() is hook


@linux_only
def test_a_profile_hook_set_before_is_handed_each_thread(unhooked: None) -> None:
    events: list[str] = []

    def earlier(frame: object, event: str, arg: object) -> None:
        if threading.current_thread().name == "with-profiler":
            events.append(event)

    threading.setprofile(earlier)  # type: ignore[arg-type]
    assert name_threads_natively()
    seen = run_thread("with-profiler")
    assert seen["kernel_name"] == "with-profiler"
    assert seen["profile_left"] is earlier  # the earlier profiler keeps the thread
    assert events and events[0] == "call"  # and it saw run() begin


@linux_only
def test_a_thread_started_after_the_hook_has_its_python_name_in_the_kernel(hooked: None) -> None:
    seen = run_thread("group-commit")
    assert seen["kernel_name"] == "group-commit"


@linux_only
def test_a_long_name_is_cut_to_what_the_kernel_keeps(hooked: None) -> None:
    seen = run_thread("outbox-relay-deliveries")
    assert seen["kernel_name"] == "outbox-relay-de"


@linux_only
def test_the_hook_leaves_no_profiler_running_in_a_thread_that_had_none(hooked: None) -> None:
    seen = run_thread("event-consumer")
    assert seen["profile_left"] is None


@linux_only
def test_the_main_thread_keeps_the_process_name(hooked: None) -> None:
    before = kernel_name_of(threading.main_thread().native_id or 0)
    run_thread("grpc-loop")
    assert kernel_name_of(threading.main_thread().native_id or 0) == before


@linux_only
def test_without_the_hook_a_thread_keeps_the_process_name(unhooked: None) -> None:
    process_name = kernel_name_of(threading.main_thread().native_id or 0)
    seen = run_thread("not-named")
    assert seen["kernel_name"] == process_name
