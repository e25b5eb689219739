"""The invariants, checked on the services' SQLite files: nothing lost, nothing charged twice."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from tests.faults.load import LoadGenerator

TERMINAL = ("COMPLETED", "FAILED")


def query(db: Path, sql: str, params: Iterable[object] = ()) -> list[tuple[object, ...]]:
    """Rows of one read-only query on a live service database (WAL: never blocks the writer)."""
    connection = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        return connection.execute(sql, tuple(params)).fetchall()
    finally:
        connection.close()


@dataclass(frozen=True)
class OrderRow:
    id: str
    user_id: int
    product_id: int
    price_cents: int
    status: str
    updated_at: str
    request_id: str | None


def orders(db: Path) -> dict[str, OrderRow]:
    rows = query(
        db,
        "SELECT id, user_id, product_id, price_cents, status, updated_at, request_id FROM orders",
    )
    return {str(r[0]): OrderRow(*r) for r in rows}  # type: ignore[arg-type]


def balances(db: Path) -> dict[int, int]:
    return {int(u): int(b) for u, b in query(db, "SELECT user_id, balance_cents FROM account")}  # type: ignore[call-overload]


def transactions_per_order(db: Path) -> Counter[str]:
    return Counter(str(r[0]) for r in query(db, 'SELECT order_id FROM "transaction"'))


def approved_payments(db: Path) -> dict[str, int]:
    rows = query(db, "SELECT order_id, amount_cents FROM payment WHERE approved")
    return {str(o): int(a) for o, a in rows}  # type: ignore[call-overload]


def set_balances(db: Path, wanted: dict[int, int]) -> None:
    """Test setup: give the seeded users these balances (before any order is placed)."""
    connection = sqlite3.connect(db, timeout=30)
    try:
        with connection:
            for user_id, cents in wanted.items():
                connection.execute(
                    "UPDATE account SET balance_cents = ? WHERE user_id = ?", (cents, user_id)
                )
    finally:
        connection.close()


class TerminalWatch:
    """Records each order's (status, updated_at) when first seen terminal, to spot later changes."""

    def __init__(self, order_db: Path, interval_s: float = 0.3) -> None:
        self.order_db = order_db
        self.interval_s = interval_s
        self.first_seen: dict[str, tuple[str, str]] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="terminal-watch", daemon=True)

    def __enter__(self) -> TerminalWatch:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def poll(self) -> None:
        rows = query(
            self.order_db,
            "SELECT id, status, updated_at FROM orders WHERE status IN ('COMPLETED', 'FAILED')",
        )
        for order_id, status, updated_at in rows:
            self.first_seen.setdefault(str(order_id), (str(status), str(updated_at)))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except sqlite3.Error:
                pass  # a busy moment; the next poll catches up


def wait_terminal(
    order_db: Path, ids: set[str], timeout_s: float, *, every: bool = True
) -> float | None:
    """Seconds until every order in `ids` (and, with `every`, every order stored) has ended.

    None if that did not happen within `timeout_s`.
    """
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        try:
            stored = orders(order_db)
        except sqlite3.Error:
            stored = {}
        done = all(i in stored and stored[i].status in TERMINAL for i in ids)
        if done and (not every or all(o.status in TERMINAL for o in stored.values())):
            return time.monotonic() - began
        time.sleep(0.2)
    return None


@dataclass
class Outcome:
    """What the invariants found; `problems` is empty when everything holds."""

    sent: int = 0
    completed: int = 0
    failed: int = 0
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)


def check(
    *,
    order_db: Path,
    payment_db: Path,
    load: LoadGenerator,
    start_balances: dict[int, int],
    watch: TerminalWatch,
    extra_accepted: Iterable[str] = (),
) -> Outcome:
    """Check every invariant of the saga; return the figures and each violation found."""
    watch.poll()
    stored = orders(order_db)
    final = balances(payment_db)
    txs = transactions_per_order(payment_db)
    approved = approved_payments(payment_db)
    accepted = load.accepted_ids() | set(extra_accepted)
    out = Outcome(sent=load.sent + len(set(extra_accepted)))
    problems = out.problems

    missing = sorted(i for i in accepted if i not in stored)
    stuck = sorted(o.id for o in stored.values() if o.status not in TERMINAL)
    out.lost = len(missing) + len(stuck)
    if missing:
        problems.append(f"{len(missing)} accepted order(s) not stored, e.g. {missing[:3]}")
    if stuck:
        problems.append(f"{len(stuck)} order(s) never ended, e.g. {stuck[:3]}")
    if load.rejected:
        problems.append(f"{len(load.rejected)} valid CreateOrder(s) rejected: {load.rejected[:3]}")
    if load.abandoned:
        problems.append(f"{len(load.abandoned)} CreateOrder(s) never got through")
    by_request = Counter(o.request_id for o in stored.values() if o.request_id)
    twice = [r for r, n in by_request.items() if n > 1]
    if twice:
        problems.append(f"{len(twice)} request_id(s) stored as several orders: {twice[:3]}")

    completed = [o for o in stored.values() if o.status == "COMPLETED"]
    failed = [o for o in stored.values() if o.status == "FAILED"]
    out.completed, out.failed = len(completed), len(failed)

    many = [i for i, n in txs.items() if n > 1]
    none = [o.id for o in completed if txs[o.id] == 0]
    for_failed = [o.id for o in failed if txs[o.id]]
    orphans = [i for i in txs if i not in stored]
    out.duplicated = len(many)
    for what, ids in (
        ("order(s) with more than one transaction", many),
        ("COMPLETED order(s) without a transaction", none),
        ("FAILED order(s) with a transaction", for_failed),
        ("transaction(s) for no stored order", orphans),
    ):
        if ids:
            problems.append(f"{len(ids)} {what}, e.g. {ids[:3]}")
    mismatched = [o.id for o in completed if approved.get(o.id) != o.price_cents]
    mismatched += [o.id for o in failed if o.id in approved]
    if mismatched:
        problems.append(f"{len(mismatched)} order(s) whose payment disagrees: {mismatched[:3]}")

    for user_id, start in sorted(start_balances.items()):
        spent = sum(o.price_cents for o in completed if o.user_id == user_id)
        expected, actual = start - spent, final.get(user_id)
        if actual != expected:
            if actual is not None and actual < expected:
                out.duplicated += 1  # charged more than its completed orders cost
            problems.append(f"user {user_id}: balance {actual}, expected {start} - {spent}")
        if actual is not None and actual < 0:
            problems.append(f"user {user_id}: negative balance {actual}")

    changed = [
        i
        for i, (status, updated_at) in watch.first_seen.items()
        if (stored[i].status, stored[i].updated_at) != (status, updated_at)
    ]
    if changed:
        problems.append(f"{len(changed)} terminal order(s) changed later, e.g. {changed[:3]}")
    return out
