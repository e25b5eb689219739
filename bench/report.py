"""The end of a run: a readable table, the results file, and the one-line JSON summary."""

from __future__ import annotations

import json
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import waits
from bench.commit_probe import describe

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def git_commit() -> tuple[str, bool]:
    """(short commit, whether the checkout has uncommitted changes)."""

    def git(*args: str) -> str:
        run = subprocess.run(["git", *args], capture_output=True, text=True, cwd=RESULTS_DIR)
        return run.stdout.strip()

    return git("rev-parse", "--short", "HEAD") or "unknown", bool(git("status", "--porcelain"))


def summary(results: dict[str, Any]) -> dict[str, Any]:
    """The figures of the last line (issue 14's names, then issue 19's; the ceiling is the
    aio echo)."""
    tp = results.get("throughput", {})
    lat = results.get("latency", {})
    light = results.get("light", {})
    watchers = results.get("watchers", {})
    receiving = results.get("receiving_watchers", {})
    received = receiving.get("accounting", {})
    lone = results.get("all_orders", {})
    return {
        "orders_per_s": tp.get("orders_per_s"),
        "grpc_ceiling_rps": results.get("grpc_echo_aio", {}).get("rps"),
        "ratio": results.get("ratio_to_grpc_echo"),
        "ratio_cpu_normalised": results.get("ratio_cpu_normalised"),
        "p50_ms": lat.get("p50_ms"),
        "p95_ms": lat.get("p95_ms"),
        "p99_ms": lat.get("p99_ms"),
        "offered_per_s": lat.get("offered_per_s"),
        "light_p50_ms": light.get("p50_ms"),
        "light_p99_ms": light.get("p99_ms"),
        "watchers": watchers.get("open_at_end"),
        "watcher_errors": sum(watchers.get("errors", {}).values()) if watchers else None,
        "grpc_echo_sync_rps": results.get("grpc_echo_sync", {}).get("rps"),
        "kafka_ceiling_per_s": results.get("kafka", {}).get("msgs_per_s"),
        "cpu_s_per_1k_orders": tp.get("cpu_s_per_1k_orders"),
        "watch_deliveries_per_s": receiving.get("deliveries_per_s"),
        "watch_lag_p50_ms": receiving.get("lag", {}).get("p50_ms"),
        "watch_lag_p99_ms": receiving.get("lag", {}).get("p99_ms"),
        "watch_missed": received.get("missed"),
        "watch_duplicated": received.get("duplicated"),
        "watch_create_p99_ms": receiving.get("light", {}).get("p99_ms"),
        "lone_create_p50_ms": lone.get("create_ack", {}).get("p50_ms"),
        "lone_create_p99_ms": lone.get("create_ack", {}).get("p99_ms"),
        "lone_watch_missed": lone.get("accounting", {}).get("missed"),
        "lone_watch_duplicated": lone.get("accounting", {}).get("duplicated"),
        "disk_commit_idle_p99_ms": results.get("disk_commit_idle", {}).get("p99_ms"),
        "lone_disk_commit_p99_ms": lone.get("disk_commit", {}).get("p99_ms"),
        "latency_disk_commit_p99_ms": lat.get("disk_commit", {}).get("p99_ms"),
        "shape": results.get("shape"),
    }


def save(results: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H%M%SZ")
    path = RESULTS_DIR / f"{stamp}-{results['commit']}.json"
    path.write_text(json.dumps(results, indent=2) + "\n")
    return path


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        value = f"{value:,.1f}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value}{unit}"


def _cpu(cpu: dict[str, Any]) -> str:
    parts = [f"{k} {v:.1f}s" for k, v in cpu.items() if k != "machine_busy_fraction" and v]
    busy = cpu.get("machine_busy_fraction")
    return ", ".join(parts) + (f"; machine {busy:.0%} busy" if busy is not None else "")


#: Processes whose threads the report shows: the services' (names as bench.saga's
#: SERVICE_PROCESS) and Kafka's nodes.
_THREADS_OF = re.compile(r"(order|payment|kafka)\S*")


def _threads(phase: dict[str, Any]) -> list[tuple[str, str, str]]:
    """Which threads of the services and Kafka spent the phase's CPU (results from before
    the bench read them: none)."""
    shown = []
    for process, threads in phase.get("cpu_threads_s", {}).items():
        busy = [f"{name} {seconds:.1f}s" for name, seconds in threads.items() if seconds >= 0.05]
        if _THREADS_OF.fullmatch(process) and busy:
            shown.append(f"{process}: " + ", ".join(busy))
    return [("  CPU by thread", "", "; ".join(shown))] if shown else []


def _waits(phase: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The phase's means from the services' metrics (results from before they existed: none)."""
    if "waits" not in phase:
        return []
    return [("  where orders waited", "means", waits.describe(phase["waits"]))]


def echo_ceiling(results: dict[str, Any]) -> str:
    """The machine's ceiling as this run measured it, to stand beside absolute figures."""
    rps = results.get("grpc_echo_aio", {}).get("rps")
    return (
        "aio echo ceiling not measured (no echo phase)"
        if rps is None
        else (f"aio echo ceiling {_fmt(rps)} rps")
    )


def _missed(checked: dict[str, Any]) -> str:
    return f"missed {_fmt(checked.get('missed'))} / duplicated {_fmt(checked.get('duplicated'))}"


def _examples(checked: dict[str, Any]) -> str:
    examples = checked.get("missed_examples")
    return f"; missed e.g. (stream, order, version) {examples}" if examples else ""


def watch_rows(results: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The rows of the watchers and all-orders phases."""
    rows: list[tuple[str, str, str]] = []
    ceiling = echo_ceiling(results)
    got = results.get("receiving_watchers")
    if got:
        checked, lag, light = got.get("accounting", {}), got.get("lag", {}), got["light"]
        rows.append(
            (
                f"Watchers receiving @{light['offered_per_s']:.0f}/s",
                _fmt(got.get("deliveries_per_s"), " deliveries/s"),
                f"{got['opened']}/{got['requested']} streams on users 1..5 (each change to "
                f"1 in 5), {_fmt(checked.get('delivered'))} delivered; {ceiling}",
            )
        )
        rows.append(
            (
                "  delivery lag",
                f"p99 {_fmt(lag.get('p99_ms'), ' ms')}",
                f"p50 {_fmt(lag.get('p50_ms'))} / max {_fmt(lag.get('max_ms'))} ms from the "
                "change's update_time to arrival; target p99 <= 100 ms",
            )
        )
        rows.append(
            (
                "  every change once",
                _missed(checked),
                f"of {_fmt(checked.get('expected'))} (stream, change) pairs; misrouted "
                f"{_fmt(checked.get('misrouted'))}; {got.get('resumed')} streams resumed; "
                f"errors {got['errors'] or 'none'}; target 0 / 0{_examples(checked)}",
            )
        )
        rows.append(
            (
                "  light load with them",
                f"p99 {_fmt(light['p99_ms'], ' ms')}",
                f"p50 {_fmt(light['p50_ms'])} ms; without watchers p99 "
                f"{_fmt(got.get('light_without_watchers_p99_ms'))} ms (x"
                f"{_fmt(got.get('p99_with_over_without'))}); target <= 2x",
            )
        )
        rows.append(("  CPU in phase", "", _cpu(light["cpu_s"])))
    lone = results.get("all_orders")
    if lone:
        ack, terminal = lone["create_ack"], lone["create_terminal"]
        rows.append(
            (
                f"Lone CreateOrder, {lone['opened']} streams",
                f"p99 {_fmt(ack['p99_ms'], ' ms')}",
                f"p50 {_fmt(ack['p50_ms'])} / max {_fmt(ack['max_ms'])} ms over {lone['creates']} "
                f"calls one at a time, each change to every stream; create->terminal p50 "
                f"{_fmt(terminal['p50_ms'])} / p99 {_fmt(terminal['p99_ms'])} ms; target p99 <= "
                f"50 ms; {ceiling}",
            )
        )
        checked = lone.get("accounting", {})
        rows.append(
            (
                "  every stream, every change",
                _missed(checked),
                f"{_fmt(checked.get('delivered'))} delivered ({_fmt(lone.get('deliveries_per_s'))}"
                f"/s), lag p99 {_fmt(lone.get('lag', {}).get('p99_ms'))} ms; "
                f"{lone.get('resumed')} streams resumed; errors {lone['errors'] or 'none'}"
                f"{_examples(checked)}",
            )
        )
        rows.append(("  a bare commit meanwhile", "", describe(lone.get("disk_commit"))))
        rows.append(("  CPU in phase", "", _cpu(lone["cpu_s"])))
    return rows


def table(results: dict[str, Any]) -> str:
    """The results as aligned rows of (what, figure, detail)."""
    rows: list[tuple[str, str, str]] = []
    for key in ("grpc_echo_sync", "grpc_echo_aio"):
        echo = results.get(key)
        if echo:
            rows.append(
                (
                    f"gRPC echo ceiling ({key[-4:].strip('_')})",
                    _fmt(echo["rps"], " rps"),
                    f"{echo['model']}, {echo['concurrency']} in flight, {echo['duration_s']:.0f}s",
                )
            )
    kafka = results.get("kafka")
    if kafka:
        rows.append(
            (
                "Kafka 3-hop ceiling",
                _fmt(kafka["msgs_per_s"], " msgs/s"),
                f"{kafka['received']} events, {kafka['partitions']} partitions, {kafka['hops']}",
            )
        )
        rows.append(("  CPU while flowing", "", _cpu(kafka["cpu_s"])))
    idle = results.get("disk_commit_idle")
    if idle:
        rows.append(
            (
                "Disk commit, nothing running",
                f"p99 {_fmt(idle.get('p99_ms'), ' ms')}",
                "one SQLite row, synchronous=FULL, on the databases' disk (bench/commit_probe.py;"
                f" measured beside the lone creates and the latency too): {describe(idle)}",
            )
        )
    tp = results.get("throughput")
    if tp:
        rows.append(
            (
                "Saga max throughput",
                _fmt(tp["orders_per_s"], " orders/s"),
                f"terminal in {tp['window_s']:.0f}s window: {tp['orders_completed']} completed, "
                f"{tp['orders_failed']} failed; {tp['concurrency']} CreateOrder in flight",
            )
        )
        rows.append(
            (
                "  CreateOrder accepted",
                _fmt(tp["creates_per_s"], "/s"),
                f"at most {tp['max_backlog']} sagas unfinished; errors {tp['errors']}",
            )
        )
        ratio = results.get("ratio_to_grpc_echo")
        rows.append(
            (
                "  vs gRPC echo (aio)",
                "n/a" if ratio is None else f"{ratio:.3f}",
                "orders/s over the aio echo of this run (the services' server model); "
                "target >= 0.4",
            )
        )
        normalised = results.get("ratio_cpu_normalised")
        rows.append(
            (
                "  same, per CPU second",
                "n/a" if normalised is None else f"{normalised:.3f}",
                f"echo CPU per call {_fmt(results.get('grpc_echo_aio', {}).get('cpu_ms_per_call'))}"
                f" ms / saga CPU per order {_fmt(tp.get('cpu_ms_per_order_all'))} ms "
                "(all processes: services, Kafka, PostgreSQL, load generator): "
                "load on the machine aside",
            )
        )
        rows.append(
            (
                "  CPU per 1k orders",
                _fmt(tp["cpu_s_per_1k_orders"], " s"),
                "order + payment processes, utime+stime from /proc",
            )
        )
        rows.append(("  CPU in window", "", _cpu(tp["cpu_s"])))
        rows += _threads(tp)
        rows += _waits(tp)
    light = results.get("light")
    if light:
        bound = ">=" if light.get("percentiles_are_lower_bounds") else ""
        rows.append(
            (
                f"Saga light load @{light['offered_per_s']:.0f}/s",
                f"p50 {bound}{_fmt(light['p50_ms'], ' ms')}",
                f"p99 {_fmt(light['p99_ms'])} / max {_fmt(light['max_ms'])} ms, "
                f"{light['finished']}/{light['sent']} finished, {light['errors']} errors; "
                f"target p50 <= 25 ms; {echo_ceiling(results)}",
            )
        )
        rows += _waits(light)
    rows += watch_rows(results)
    lat = results.get("latency")
    if lat:
        bound = ">=" if lat.get("percentiles_are_lower_bounds") else ""
        rows.append(
            (
                f"Saga latency @{lat['offered_per_s']:.0f}/s",
                f"p99 {bound}{_fmt(lat['p99_ms'], ' ms')}",
                f"p50 {_fmt(lat['p50_ms'])} / p95 {_fmt(lat['p95_ms'])} / "
                f"max {_fmt(lat['max_ms'])} ms, CreateOrder -> terminal on WatchOrders; "
                f"target p99 <= 100 ms; {echo_ceiling(results)}"
                + ("; unfinished orders counted with their wait so far" if bound else ""),
            )
        )
        warmup = lat.get("warmup_s") or 0
        measured = f"; measured after {warmup:g} s at that rate" if warmup else "; no warm-up"
        rows.append(("  offered", "", lat.get("rate_source", "") + measured))
        rows.append(
            (
                "  orders",
                f"{lat['finished']}/{lat['sent']}",
                f"finished; {lat['unfinished_after_drain']} unfinished after "
                f"{lat['drain_timeout_s']:.0f}s drain; {lat['errors']} errors; sent at "
                f"{lat['achieved_send_per_s']:.0f}/s, "
                f"max lag {lat['max_schedule_lag_ms']} ms",
            )
        )
        sched, ack = lat["from_scheduled"], lat["create_ack"]
        rows.append(
            (
                "  from scheduled time",
                f"p99 {_fmt(sched['p99_ms'], ' ms')}",
                f"p50 {_fmt(sched['p50_ms'])} ms (counts send lag too)",
            )
        )
        rows.append(
            (
                "  CreateOrder ack",
                f"p99 {_fmt(ack['p99_ms'], ' ms')}",
                f"p50 {_fmt(ack['p50_ms'])} ms (unary call only)",
            )
        )
        rows.append(("  a bare commit meanwhile", "", describe(lat.get("disk_commit"))))
        if lat.get("slowest"):
            worst = ", ".join(
                f"{w['ms']:.0f} ms at {w['at']} (t={w['at_s']:.0f}s, ack {w['create_ack_ms']:.0f})"
                for w in lat["slowest"][:3]
            )
            rows.append(("  slowest", f"{lat.get('over_1s', 0)} over 1 s", worst))
        rows.append(("  CPU in phase", "", _cpu(lat["cpu_s"])))
        rows += _threads(lat)
        rows += _waits(lat)
    watchers = results.get("watchers")
    if watchers:
        rows.append(
            (
                "  watchers held open",
                f"{watchers['open_at_end']} open",
                f"{watchers['opened']}/{watchers['requested']} subscribed in "
                f"{watchers['open_s']} s over {watchers['channels']} channels, "
                f"scope {watchers['scope']}; {watchers['responses']} responses; "
                f"errors {watchers['errors'] or 'none'}",
            )
        )
    width = [max((len(r[i]) for r in rows), default=0) for i in (0, 1)]
    load = results.get("load_avg", {})
    head = (
        f"paysaga bench  {results['started_at']}  commit {results['commit']}"
        f"{' (dirty)' if results['dirty'] else ''}  {results.get('shape', '')}"
        f"  {results['machine']}"
        f"  load avg {load.get('start', ['?'])[0]} -> {load.get('end', ['?'])[0]}"
    )
    lines = [head, "-" * len(head)]
    lines += [f"{a:<{width[0]}}  {b:>{width[1]}}  {c}" for a, b, c in rows]
    return "\n".join(lines)
