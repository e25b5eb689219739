"""Threads named in the kernel as in Python, so that `top -H`, `ps -L` and /proc tell a
service's threads apart: group-commit, grpc-loop, event-consumer, outbox-relay ...

CPython (before 3.14) leaves every thread it starts with the process's name ("python"), so
an operator who sees a service at 100% of a core cannot tell which part spends it without
a profiler. `name_threads_natively()` hooks `threading.setprofile`: each thread started
after it writes its Python name to `/proc/thread-self/comm` as its first act, then hands
the thread to the profile hook that was there before (none, normally). The kernel keeps
15 bytes of a name. Where /proc cannot name threads, nothing is hooked; a name that
cannot be written leaves the thread as it was, never stops it. The main thread is left
alone: its name is the process's own, which tools such as `ps` and `pgrep` show.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

#: Where a thread names itself (Linux 3.17 and later).
_OWN_NAME = Path("/proc/thread-self/comm")
#: Bytes of a name the kernel keeps (TASK_COMM_LEN, 16, less the terminating NUL).
NAME_LIMIT = 15

ProfileHook = Callable[[FrameType, str, Any], object]


def kernel_name(name: str) -> bytes:
    """What the kernel keeps of `name`: its first 15 bytes of UTF-8, never half a character
    (characters that UTF-8 cannot carry become "?")."""
    return name.encode(errors="replace")[:NAME_LIMIT].decode(errors="ignore").encode()


def set_current_thread_name(name: str) -> bool:
    """Name the calling thread in the kernel; False where that is not possible."""
    try:
        _OWN_NAME.write_bytes(kernel_name(name))
    except OSError:
        return False
    return True


def _hook_naming_then(previous: ProfileHook | None) -> ProfileHook:
    def name_then_hand_over(frame: FrameType, event: str, arg: Any) -> object:
        sys.setprofile(previous)
        try:
            set_current_thread_name(threading.current_thread().name)
        except Exception:  # noqa: BLE001 - a name is a convenience: the thread runs regardless
            pass
        return previous(frame, event, arg) if previous is not None else None

    name_then_hand_over.names_threads = True  # type: ignore[attr-defined]
    return name_then_hand_over


def name_threads_natively() -> bool:
    """From now on, every thread `threading` starts carries its Python name in the kernel.
    False (and nothing hooked) where threads cannot be named."""
    if not sys.platform.startswith("linux") or not _OWN_NAME.exists():
        return False
    previous = threading.getprofile()
    if not getattr(previous, "names_threads", False):  # once, however often it is called
        threading.setprofile(_hook_naming_then(previous))  # type: ignore[arg-type]
    return True
