"""One scenario: a load running against a stack while a test breaks it, then the invariants."""

from __future__ import annotations

import threading
import time
from types import TracebackType

from tests.faults.invariants import (
    Outcome,
    TerminalWatch,
    balances,
    check,
    orders,
    set_balances,
    settled,
    wait_terminal,
)
from tests.faults.load import LoadGenerator
from tests.faults.report import RESULTS, Row
from tests.faults.stack import FaultStack
from tests.faults.watch import WatchStream

#: User 1 keeps its seeded 100.00 (its orders mostly fail); the others get enough for the
#: whole run, so most orders complete and a double debit would show in their balances.
FUNDED = {1: 10000, 2: 50_000_000, 3: 50_000_000, 4: 50_000_000, 5: 50_000_000}
RECOVERY_TIMEOUT_S = 150.0
#: How long the money may still move after the last order ended (refunds, late charges).
SETTLE_S = 30.0


class Scenario:
    """`with Scenario(stack, name) as run:` runs the load; `run.finish()` checks and records.

    The load is spread over every Order replica. With `watch=True` a WatchOrders stream is
    open on Order replica 0 from before the load to the end, and must see every order end.
    """

    def __init__(
        self,
        stack: FaultStack,
        name: str,
        *,
        rate: float = 40.0,
        start_balances: dict[int, int] | None = None,
        users: tuple[int, ...] = (1, 2, 3, 4, 5),
        watch: bool = False,
    ) -> None:
        self.stack = stack
        self.name = name
        self.wanted_balances = FUNDED if start_balances is None else start_balances
        self.load = LoadGenerator(stack.addresses("order"), rate=rate, users=users)
        self.watch = TerminalWatch(stack.order_url)
        self.stream = WatchStream(stack.order_address) if watch else None
        self.start_balances: dict[int, int] = {}
        self.extra_accepted: set[str] = set()
        self.recover_s: float | None = None
        self._recovering: threading.Thread | None = None
        self.began = 0.0
        #: Records this scenario must add to the dead-letter topics (poison), else none.
        self.expected_dead_letters = 0
        self._dead_letters_before = 0

    def __enter__(self) -> Scenario:
        set_balances(self.stack.payment_url, self.wanted_balances)
        self.start_balances = balances(self.stack.payment_url)
        self._dead_letters_before = self.stack.dead_letters()
        self.began = time.monotonic()
        self.watch.__enter__()
        if self.stream is not None:
            self.stream.__enter__()
        self.load.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.load.stop()
        self.watch.__exit__()
        if self.stream is not None:
            self.stream.__exit__()

    def mark_recovering(self) -> None:
        """The broken part is back: time until every order accepted so far has ended."""
        pending = self.load.accepted_ids()
        began = time.monotonic()

        def measure() -> None:
            if wait_terminal(self.stack.order_url, pending, RECOVERY_TIMEOUT_S, every=False):
                self.recover_s = time.monotonic() - began

        self._recovering = threading.Thread(target=measure, daemon=True)
        self._recovering.start()

    def finish(self) -> Outcome:
        """Stop the load, wait for every order to end, check the invariants, record the row."""
        self.load.stop()
        accepted = self.load.accepted_ids() | self.extra_accepted
        drain_s = wait_terminal(self.stack.order_url, accepted, RECOVERY_TIMEOUT_S)
        if self._recovering is not None:
            self._recovering.join(RECOVERY_TIMEOUT_S)
        elif self.recover_s is None:
            self.recover_s = drain_s
        time.sleep(1.0)  # anything still in flight would change a terminal order now
        outcome = settled(
            lambda: check(
                order_url=self.stack.order_url,
                payment_url=self.stack.payment_url,
                load=self.load,
                start_balances=self.start_balances,
                watch=self.watch,
                extra_accepted=self.extra_accepted,
            ),
            SETTLE_S,
        )
        if self.stream is not None:
            self._check_stream(outcome, accepted)
        if drain_s is None:
            outcome.problems.append(f"orders still not ended after {RECOVERY_TIMEOUT_S:.0f}s")
        dead = self._wait_dead_letters()
        if dead != self.expected_dead_letters:
            outcome.problems.append(
                f"{dead} record(s) dead-lettered, expected {self.expected_dead_letters}"
            )
        if not self.stack.alive():
            outcome.problems.append("a service process died")
        self.record(outcome)
        return outcome

    def _check_stream(self, outcome: Outcome, accepted: set[str]) -> None:
        """The WatchOrders stream saw every accepted order end, as the database says."""
        assert self.stream is not None
        unseen = self.stream.wait_seen(accepted, SETTLE_S)
        outcome.problem(
            f"order(s) whose end WatchOrders on {self.stream.address} missed", [*unseen]
        )
        stored = orders(self.stack.order_url)
        outcome.problem(
            "order(s) whose end WatchOrders reported otherwise than stored",
            [i for i, s in self.stream.ended.items() if i in accepted and stored[i].status != s],
        )
        if self.stream.error is not None:
            outcome.problems.append(f"the WatchOrders stream ended early: {self.stream.error}")

    def _wait_dead_letters(self, timeout_s: float = 30.0) -> int:
        deadline = time.monotonic() + timeout_s
        while True:
            dead = self.stack.dead_letters() - self._dead_letters_before
            if dead >= self.expected_dead_letters or time.monotonic() > deadline:
                return dead
            time.sleep(0.3)

    def record(self, outcome: Outcome) -> None:
        RESULTS.append(
            Row(
                scenario=self.name,
                sent=outcome.sent,
                completed=outcome.completed,
                failed=outcome.failed,
                lost=outcome.lost,
                duplicated=outcome.duplicated,
                recover_s=self.recover_s,
                redelivered=self.stack.redeliveries(),
                problems=len(outcome.problems),
            )
        )

    def stored_status(self, order_id: str) -> str | None:
        row = orders(self.stack.order_url).get(order_id)
        return None if row is None else row.status


def assert_holds(outcome: Outcome, stack: FaultStack) -> None:
    """Fail with every broken invariant and the tail of both service logs."""
    if outcome.problems:
        raise AssertionError(
            "\n".join(["invariants broken:", *outcome.problems, stack.log_tails()])
        )
    assert outcome.lost == 0
    assert outcome.duplicated == 0
