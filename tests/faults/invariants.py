"""The invariants, checked in the services' databases (SQLite or PostgreSQL, by URL).

Nothing lost: every accepted order is stored and ends COMPLETED or FAILED, and never
changes after. Nothing charged twice: each user's balance is the start minus the charges
plus the refunds, never negative; a COMPLETED order has exactly one CHARGE (its price) and
no REFUND; a FAILED order's charge, if any, was refunded (as many REFUNDs as CHARGEs, at
most one of each).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

from tests.faults.load import LoadGenerator

TERMINAL = ("COMPLETED", "FAILED")
CHARGE, REFUND = "CHARGE", "REFUND"

_engines: dict[str, Engine] = {}


def engine(url: str) -> Engine:
    """One engine per database, holding no idle connection (a test may drop the database)."""
    if url not in _engines:
        _engines[url] = create_engine(url, poolclass=NullPool)
    return _engines[url]


def query(
    url: str, sql: str, params: Mapping[str, object] | None = None
) -> list[tuple[object, ...]]:
    """Rows of one read-only query on a live service database."""
    with engine(url).connect() as connection:
        return [tuple(row) for row in connection.execute(text(sql), dict(params or {}))]


@dataclass(frozen=True)
class OrderRow:
    id: str
    user_id: int
    product_id: int
    price_cents: int
    status: str
    updated_at: object
    request_id: str | None
    failure_reason: str


def orders(url: str) -> dict[str, OrderRow]:
    rows = query(
        url,
        "SELECT id, user_id, product_id, price_cents, status, updated_at, request_id,"
        " failure_reason FROM orders",
    )
    return {str(r[0]): OrderRow(*r) for r in rows}  # type: ignore[arg-type]


def balances(url: str) -> dict[int, int]:
    rows = query(url, "SELECT user_id, balance_cents FROM account")
    return {int(u): int(b) for u, b in rows}  # type: ignore[call-overload]


@dataclass(frozen=True)
class Ledger:
    """The Payment service's money: balances, and each order's transactions and payment."""

    balances: dict[int, int]
    #: order id -> kind -> the amounts of its transactions of that kind.
    transactions: dict[str, dict[str, list[int]]]
    #: user id -> kind -> the sum of the user's transactions of that kind.
    totals: dict[int, dict[str, int]]
    #: order id -> amount of its approved payment.
    approved: dict[str, int]

    @classmethod
    def read(cls, url: str) -> Ledger:
        transactions: dict[str, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        totals: dict[int, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        rows = query(url, 'SELECT order_id, kind, user_id, amount_cents FROM "transaction"')
        for order_id, kind, user_id, amount in rows:
            transactions[str(order_id)][str(kind)].append(int(amount))  # type: ignore[call-overload]
            totals[int(user_id)][str(kind)] += int(amount)  # type: ignore[call-overload]
        approved = query(url, "SELECT order_id, amount_cents FROM payment WHERE approved")
        return cls(
            balances=balances(url),
            transactions=transactions,
            totals=totals,
            approved={str(o): int(a) for o, a in approved},  # type: ignore[call-overload]
        )

    def of(self, order_id: str, kind: str) -> list[int]:
        return self.transactions.get(order_id, {}).get(kind, [])


def set_balances(url: str, wanted: dict[int, int]) -> None:
    """Test setup: give the seeded users these balances (before any order is placed)."""
    with engine(url).begin() as connection:
        for user_id, cents in wanted.items():
            connection.execute(
                text("UPDATE account SET balance_cents = :cents WHERE user_id = :user"),
                {"cents": cents, "user": user_id},
            )


def outcome_of(reason: str) -> str:
    """A failure reason without the refund note a FAILED order may gain later."""
    return reason.split("; refunded ", 1)[0]


class TerminalWatch:
    """Records each order's status and outcome when first seen terminal, to spot later changes.

    (A FAILED order's reason may gain a refund note afterwards: that is not a change.)"""

    def __init__(self, order_url: str, interval_s: float = 0.3) -> None:
        self.order_url = order_url
        self.interval_s = interval_s
        self.first_seen: dict[str, tuple[str, object]] = {}
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
            self.order_url,
            "SELECT id, status, failure_reason FROM orders WHERE status IN ('COMPLETED', 'FAILED')",
        )
        for order_id, status, reason in rows:
            self.first_seen.setdefault(str(order_id), (str(status), outcome_of(str(reason))))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.poll()
            except SQLAlchemyError:
                pass  # a busy moment, or the database restarting; the next poll catches up


def wait_terminal(
    order_url: str, ids: set[str], timeout_s: float, *, every: bool = True
) -> float | None:
    """Seconds until every order in `ids` (and, with `every`, every order stored) has ended.

    None if that did not happen within `timeout_s`.
    """
    began = time.monotonic()
    while time.monotonic() - began < timeout_s:
        try:
            stored = orders(order_url)
        except SQLAlchemyError:
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

    def problem(self, what: str, ids: list[str]) -> None:
        """Record `what` if any order is concerned, with a few examples."""
        if ids:
            self.problems.append(f"{len(ids)} {what}, e.g. {sorted(ids)[:3]}")


def check(
    *,
    order_url: str,
    payment_url: str,
    load: LoadGenerator,
    start_balances: dict[int, int],
    watch: TerminalWatch,
    extra_accepted: Iterable[str] = (),
) -> Outcome:
    """Check every invariant of the saga; return the figures and each violation found."""
    watch.poll()
    stored = orders(order_url)
    ledger = Ledger.read(payment_url)
    accepted = load.accepted_ids() | set(extra_accepted)
    out = Outcome(sent=load.sent + len(set(extra_accepted)))

    missing = [i for i in accepted if i not in stored]
    stuck = [o.id for o in stored.values() if o.status not in TERMINAL]
    out.lost = len(missing) + len(stuck)
    out.problem("accepted order(s) not stored", missing)
    out.problem("order(s) never ended", stuck)
    out.problem("valid CreateOrder(s) rejected", load.rejected)
    out.problem("CreateOrder(s) never got through", load.abandoned)
    seen: dict[tuple[int, str], int] = defaultdict(int)
    for o in stored.values():
        if o.request_id:
            seen[(o.user_id, o.request_id)] += 1
    out.problem(
        "request_id(s) stored as several orders", [r for (_, r), n in seen.items() if n > 1]
    )

    completed = [o for o in stored.values() if o.status == "COMPLETED"]
    failed = [o for o in stored.values() if o.status == "FAILED"]
    out.completed, out.failed = len(completed), len(failed)
    _check_orders_money(out, stored, completed, failed, ledger)
    _check_balances(out, completed, ledger, start_balances)

    changed = [
        i
        for i, (status, outcome) in watch.first_seen.items()
        if (stored[i].status, outcome_of(stored[i].failure_reason)) != (status, outcome)
    ]
    out.problem("terminal order(s) changed later", changed)
    return out


def _check_orders_money(
    out: Outcome,
    stored: dict[str, OrderRow],
    completed: list[OrderRow],
    failed: list[OrderRow],
    ledger: Ledger,
) -> None:
    """Each order's transactions and payment agree with how it ended."""
    many = [
        i for i, kinds in ledger.transactions.items() if any(len(a) > 1 for a in kinds.values())
    ]
    out.duplicated = len(many)
    out.problem("order(s) with more than one transaction of a kind", many)
    out.problem(
        "transaction(s) for no stored order", [i for i in ledger.transactions if i not in stored]
    )
    out.problem(
        "COMPLETED order(s) without exactly one CHARGE of its price",
        [o.id for o in completed if ledger.of(o.id, CHARGE) != [o.price_cents]],
    )
    out.problem("COMPLETED order(s) refunded", [o.id for o in completed if ledger.of(o.id, REFUND)])
    out.problem(
        "COMPLETED order(s) whose payment disagrees",
        [o.id for o in completed if ledger.approved.get(o.id) != o.price_cents],
    )
    out.problem(
        "FAILED order(s) whose charge was not refunded once",
        [o.id for o in failed if ledger.of(o.id, CHARGE) != ledger.of(o.id, REFUND)],
    )
    out.problem(
        "FAILED order(s) with an approved payment and no refund",
        [o.id for o in failed if o.id in ledger.approved and not ledger.of(o.id, REFUND)],
    )


def _check_balances(
    out: Outcome, completed: list[OrderRow], ledger: Ledger, start_balances: dict[int, int]
) -> None:
    """balance = start − charges + refunds = start − COMPLETED prices, never negative."""
    for user_id, start in sorted(start_balances.items()):
        totals = ledger.totals.get(user_id, {})
        charged, refunded = totals.get(CHARGE, 0), totals.get(REFUND, 0)
        spent = sum(o.price_cents for o in completed if o.user_id == user_id)
        actual = ledger.balances.get(user_id)
        if actual != start - charged + refunded:
            if actual is not None and actual < start - charged + refunded:
                out.duplicated += 1  # money taken without a transaction that says so
            out.problems.append(
                f"user {user_id}: balance {actual}, expected {start} - {charged} + {refunded}"
            )
        if charged - refunded != spent:
            if charged - refunded > spent:
                out.duplicated += 1  # charged more than its completed orders cost
            out.problems.append(
                f"user {user_id}: charged {charged} - refunded {refunded}, but its COMPLETED "
                f"orders cost {spent}"
            )
        if actual is not None and actual < 0:
            out.problems.append(f"user {user_id}: negative balance {actual}")


def settled(run: Callable[[], Outcome], timeout_s: float) -> Outcome:
    """`run()` again until no problem is left or timeout_s passed: the last outcome.

    Money moves in hops after an order ends (a refund, a charge recorded late), so a check
    may first see a state in between; only one that still fails at the end is a violation.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = run()
        if not outcome.problems or time.monotonic() > deadline:
            return outcome
        time.sleep(1.0)
