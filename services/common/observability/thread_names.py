"""Threads named in the kernel as in Python, so that `top -H`, `ps -L` and /proc tell a
service's threads apart: group-commit, grpc-loop, event-consumer, outbox-relay ...

CPython (before 3.14) leaves every thread it starts with the process's name ("python"), so
an operator who sees a service at 100% of a core cannot tell which part spends it without
a profiler. `name_threads_natively()` hooks `threading.setprofile`: each thread started
after it sets its kernel name from its Python name as its first act, then removes the hook
(one call per thread; nothing is left running). The kernel keeps 15 bytes of a name.
Linux only; elsewhere nothing changes. The main thread is left alone: its name is the
process's own, which tools such as `ps` and `pgrep` show.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
import threading
from types import FrameType
from typing import Any

#: prctl(2) option that names the calling thread.
_PR_SET_NAME = 15
#: Bytes of a name the kernel keeps (TASK_COMM_LEN, 16, less the terminating NUL).
NAME_LIMIT = 15

_prctl: Any = None


def _load_prctl() -> Any:
    global _prctl
    if _prctl is None:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        _prctl = libc.prctl
    return _prctl


def kernel_name(name: str) -> bytes:
    """What the kernel keeps of `name`: its first 15 bytes of UTF-8, never half a character."""
    return name.encode()[:NAME_LIMIT].decode(errors="ignore").encode()


def set_current_thread_name(name: str) -> bool:
    """Name the calling thread in the kernel; False where that is not possible."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return _load_prctl()(_PR_SET_NAME, ctypes.c_char_p(kernel_name(name)), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _name_then_unhook(frame: FrameType, event: str, arg: Any) -> None:
    sys.setprofile(None)
    set_current_thread_name(threading.current_thread().name)


def name_threads_natively() -> None:
    """From now on, every thread `threading` starts carries its Python name in the kernel."""
    if sys.platform.startswith("linux"):
        threading.setprofile(_name_then_unhook)
