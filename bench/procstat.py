"""CPU time of processes and of the whole machine, read from /proc (no extra dependencies)."""

from __future__ import annotations

import os

_TICK = os.sysconf("SC_CLK_TCK")


def _read_stat(path: str) -> tuple[bytes, list[bytes]] | None:
    """A /proc stat file as (the name in its parentheses, the fields after it); None if it
    is gone. Read as bytes: a name need not be UTF-8. The fields count from field 3 (the
    state): fields[1] is the parent (field 4), fields[11] to [14] are utime, stime, cutime
    and cstime (fields 14 to 17), fields[19] the start time (field 22)."""
    try:
        with open(path, "rb") as stat:
            line = stat.read()
    except OSError:
        return None
    head, closed, tail = line.rpartition(b")")
    if not closed:
        return b"", []  # not a stat line: its fields are not read
    return head.partition(b"(")[2], tail.split()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of all threads of `pid` so far; None if it is gone."""
    stat = _read_stat(f"/proc/{pid}/stat")
    if stat is None:
        return None
    fields = stat[1]
    return (int(fields[11]) + int(fields[12])) / _TICK


def tree_cpu_seconds(pid: int) -> float | None:
    """CPU seconds of `pid`, of its descendants alive now, and of the children they reaped
    (a reaped child's time is added to its parent's); None if it is gone. PostgreSQL serves
    each connection from a process of its own, forked from the server's first process.

    The processes are read one after the other: one that ends and is reaped in between is
    missed (its time is then in neither), and one that leaves the tree takes its time
    along. A pooled connection's process lives as long as its pool, so for PostgreSQL
    under the services both are rare.
    """
    children: dict[int, list[int]] = {}
    seconds: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        stat = _read_stat(f"/proc/{entry}/stat")
        if stat is None:
            continue  # it ended meanwhile
        fields = stat[1]
        try:
            parent, ticks = int(fields[1]), sum(int(f) for f in fields[11:15])
        except (IndexError, ValueError):
            continue  # its line is not one we can read
        children.setdefault(parent, []).append(int(entry))
        seconds[int(entry)] = ticks / _TICK
    if pid not in seconds:
        return None
    total, todo, seen = 0.0, [pid], set()
    while todo:
        process = todo.pop()
        if process in seen:
            continue
        seen.add(process)
        total += seconds.get(process, 0.0)
        todo += children.get(process, [])
    return total


#: A thread as one reading saw it: (thread id, its start time in ticks since boot), so that
#: a thread id the kernel hands out again is a new thread.
ThreadKey = tuple[int, int]


def thread_cpu_seconds(pid: int) -> dict[ThreadKey, tuple[str, float]]:
    """Each live thread of `pid` -> (its kernel name, user + system CPU seconds so far); {}
    if it is gone. The services name their threads (group-commit, grpc-loop,
    event-consumer ...: services.common.observability.thread_names)."""
    threads: dict[ThreadKey, tuple[str, float]] = {}
    try:
        tids = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return threads
    for tid in tids:
        stat = _read_stat(f"/proc/{pid}/task/{tid}/stat")
        if stat is None:
            continue  # it ended meanwhile
        raw_name, fields = stat
        name = raw_name.decode(errors="replace")  # a name cut mid-character
        key = (int(tid), int(fields[19]))
        threads[key] = (name, (int(fields[11]) + int(fields[12])) / _TICK)
    return threads


#: Where by_thread_name puts the CPU of threads that ended before the second reading.
ENDED = "(ended threads)"


def by_thread_name(
    before: dict[ThreadKey, tuple[str, float]],
    after: dict[ThreadKey, tuple[str, float]],
    top: int,
    process_s: float | None = None,
) -> dict[str, float]:
    """CPU seconds each thread name used between two readings, the `top` highest, the rest
    summed as "(other threads)". With `process_s`, the process's own figure for the same
    span, what the threads alive at the second reading do not account for is shown as
    ENDED."""
    used: dict[str, float] = {}
    for key, (name, seconds) in after.items():
        spent = max(0.0, seconds - before[key][1]) if key in before else seconds
        used[name] = used.get(name, 0.0) + spent
    ranked = sorted(used.items(), key=lambda item: item[1], reverse=True)
    shown = {name: round(seconds, 2) for name, seconds in ranked[:top]}
    rest = sum(seconds for _, seconds in ranked[top:])
    if rest:
        shown["(other threads)"] = round(rest, 2)
    if process_s is not None and process_s - sum(used.values()) >= 0.05:
        shown[ENDED] = round(process_s - sum(used.values()), 2)
    return shown


def machine_busy_seconds() -> tuple[float, float]:
    """(busy CPU seconds, total CPU seconds) of all CPUs since boot, from /proc/stat."""
    with open("/proc/stat") as stat:
        values = [int(v) for v in stat.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user
    return (total - idle) / _TICK, total / _TICK


class CpuMeter:
    """CPU seconds used by named processes (and the machine) between start() and stop(), and
    by each process's busiest threads (`threads`, after stop())."""

    #: Threads shown per process; the others are summed.
    TOP_THREADS = 5
    #: Processes measured with their descendants (tree_cpu_seconds), the others alone; no
    #: CPU by thread is shown for them.
    TREES = frozenset({"postgres"})

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._start: dict[str, float | None] = {}
        self._threads_start: dict[str, dict[ThreadKey, tuple[str, float]]] = {}
        self._machine: tuple[float, float] = (0.0, 0.0)
        #: process name -> thread name -> CPU seconds, of the last start()..stop().
        self.threads: dict[str, dict[str, float]] = {}

    def _cpu_seconds(self, name: str, pid: int) -> float | None:
        return tree_cpu_seconds(pid) if name in self.TREES else cpu_seconds(pid)

    def start(self) -> None:
        self._start = {name: self._cpu_seconds(name, pid) for name, pid in self.pids.items()}
        self._threads_start = {
            name: thread_cpu_seconds(pid)
            for name, pid in self.pids.items()
            if name not in self.TREES  # its threads are spread over its processes
        }
        self._machine = machine_busy_seconds()

    def stop(self) -> dict[str, float | None]:
        """name -> CPU seconds used since start(), plus the machine's busy share and the CPU
        seconds of everything else on it (other people's processes, our helpers)."""
        used: dict[str, float | None] = {}
        self.threads = {}
        for name, pid in self.pids.items():
            now, then = self._cpu_seconds(name, pid), self._start.get(name)
            used[name] = None if now is None or then is None else round(now - then, 3)
            if name in self._threads_start:
                self.threads[name] = by_thread_name(
                    self._threads_start[name], thread_cpu_seconds(pid), self.TOP_THREADS, used[name]
                )
        busy, total = machine_busy_seconds()
        busy_s, span = busy - self._machine[0], total - self._machine[1]
        ours = sum(v for v in used.values() if v is not None)
        used["other_processes"] = round(max(0.0, busy_s - ours), 3)
        used["machine_busy_fraction"] = round(busy_s / span, 3) if span else None
        return used
