"""`python -m bench.shapes` (`make bench-shapes`): two layouts back to back, and their ratios.

Runs `python -m bench.run` on the default shape (SQLite, one replica, one broker), then on
the production shape (PostgreSQL, two replicas of each service, three brokers), each on a
fresh private stack with the same phases and options (any option of bench.run may follow,
e.g. `--duration 30`), and prints the production shape's figures over the default's:

- max orders/s (target >= 0.75);
- light-load p50 (target <= 1.5);
- p99 at its own half max (target <= 2).

Each run is saved in bench/results/ as usual; the pair and its ratios too
(`<time>-<commit>-shapes.json`), unless --no-save.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.report import RESULTS_DIR, echo_ceiling, git_commit

#: (name, bench.run options) of each shape, in the order they run.
SHAPES = (
    ("default", ["--db", "sqlite", "--replicas", "1", "--brokers", "1"]),
    ("production", ["--db", "postgres", "--replicas", "2", "--brokers", "3"]),
)
#: (ratio's JSON name, what, summary key, how the ratio compares with its target, target).
RATIOS = (
    ("max_ratio", "max orders/s", "orders_per_s", ">=", 0.75),
    ("light_p50_ratio", "light p50", "light_p50_ms", "<=", 1.5),
    ("half_max_p99_ratio", "p99 at its half max", "p99_ms", "<=", 2.0),
)
#: bench.run options that choose the stack: the shapes set them.
SHAPE_OPTIONS = ("--db", "--replicas", "--brokers", "--use-running", "--order-address")


def ratios(default: dict[str, Any], production: dict[str, Any]) -> list[dict[str, Any]]:
    """Each RATIOS figure of the production shape over the default's, and whether it meets
    its target (None when either run lacks the figure)."""
    found = []
    for name, what, key, compare, target in RATIOS:
        base, other = default.get(key), production.get(key)
        ratio = round(other / base, 3) if base and other is not None else None
        met = None if ratio is None else (ratio >= target if compare == ">=" else ratio <= target)
        found.append(
            {
                "name": name,
                "what": what,
                "key": key,
                "default": base,
                "production": other,
                "ratio": ratio,
                "target": f"{compare} {target:g}",
                "met": met,
            }
        )
    return found


def run_shape(name: str, options: list[str], passthrough: list[str]) -> dict[str, Any]:
    """One bench.run on a fresh private stack; its results (exit on failure)."""
    with tempfile.TemporaryDirectory(prefix="paysaga-shapes-") as tmp:
        out = Path(tmp) / "results.json"
        command = [sys.executable, "-m", "bench.run", *options, *passthrough]
        print(f"\n==== shape {name}: {' '.join(command[1:])}", flush=True)
        done = subprocess.run([*command, "--results-out", str(out)], check=False)
        if done.returncode != 0 or not out.exists():
            raise SystemExit(f"error: the {name} shape's run failed (exit {done.returncode})")
        results: dict[str, Any] = json.loads(out.read_text())
        return results


def _figure(value: Any, unit: str = "") -> str:
    return "n/a" if value is None else f"{value:,}{unit}"


def report(runs: dict[str, dict[str, Any]], found: list[dict[str, Any]]) -> str:
    """The two shapes' figures, each beside its run's echo ceiling, then the ratios."""
    lines = []
    for name, results in runs.items():
        s = results["summary"]
        lines.append(
            f"{name:<10} {s.get('shape')}: max {_figure(s.get('orders_per_s'), ' orders/s')}, "
            f"light p50 {_figure(s.get('light_p50_ms'), ' ms')}, p99 "
            f"{_figure(s.get('p99_ms'), ' ms')} at {_figure(s.get('offered_per_s'), '/s')}; "
            f"{echo_ceiling(results)}"
        )
    lines.append("")
    for ratio in found:
        met = {True: "met", False: "NOT met", None: "n/a"}[ratio["met"]]
        lines.append(
            f"production / default  {ratio['what']:<20} {_figure(ratio['ratio']):>7}   "
            f"({_figure(ratio['production'])} / {_figure(ratio['default'])}; target "
            f"{ratio['target']}: {met})"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.shapes",
        description=__doc__,
        epilog="Other options go to both runs: see python -m bench.run --help.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--no-save", action="store_true", help="write no bench/results/ file")
    args, passthrough = parser.parse_known_args(argv)
    chosen = [o for o in passthrough if o.split("=")[0] in SHAPE_OPTIONS]
    if chosen:
        parser.error(f"{', '.join(chosen)}: the shapes set the stack; leave these out")
    if args.no_save:
        passthrough.append("--no-save")
    commit, dirty = git_commit()
    started = datetime.now(UTC)
    runs = {name: run_shape(name, options, passthrough) for name, options in SHAPES}
    found = ratios(runs["default"]["summary"], runs["production"]["summary"])
    print(f"\nbench-shapes  commit {commit}{' (dirty)' if dirty else ''}, back to back")
    print(report(runs, found))
    pair = {
        "started_at": started.strftime("%Y-%m-%d %H:%M:%SZ"),
        "commit": commit,
        "dirty": dirty,
        "options": passthrough,
        "summaries": {name: results["summary"] for name, results in runs.items()},
        "ratios": found,
    }
    if not args.no_save:
        path = RESULTS_DIR / f"{started.strftime('%Y-%m-%dT%H%M%SZ')}-{commit}-shapes.json"
        path.write_text(json.dumps(pair, indent=2) + "\n")
        print(f"\nthe pair saved to {path}")
    print(json.dumps({r["name"]: r["ratio"] for r in found}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
