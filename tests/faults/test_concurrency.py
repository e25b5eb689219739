"""Many concurrent orders of one user that together exceed the balance: no overdraft."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from paysaga.v1 import orders_pb2
from tests.faults.invariants import orders
from tests.faults.scenario import FUNDED, Scenario, assert_holds
from tests.faults.stack import FaultStack

pytestmark = pytest.mark.faults

BURST = 80
BALANCE = 10000  # user 1's seeded 100.00: two or three of these orders at most


def test_concurrent_orders_of_one_user_never_overdraw(stack: FaultStack) -> None:
    background_users = (2, 3, 4, 5)
    with Scenario(stack, "overdraw one user", users=background_users) as run:
        stub = stack.orders_stub()

        def place(i: int) -> str:
            request = orders_pb2.CreateOrderRequest(
                user_id=1, product_id=1 + i % 2, request_id=f"burst-{i}"
            )
            return stub.CreateOrder(request, timeout=30).order.id

        with ThreadPoolExecutor(max_workers=20) as pool:
            burst = set(pool.map(place, range(BURST)))
        run.extra_accepted |= burst
        outcome = run.finish()
    assert_holds(outcome, stack)
    assert run.start_balances[1] == BALANCE == FUNDED[1]

    stored = [o for o in orders(stack.order_url).values() if o.id in burst]
    completed = [o for o in stored if o.status == "COMPLETED"]
    failed = [o for o in stored if o.status == "FAILED"]
    spent = sum(o.price_cents for o in completed)
    assert 0 < spent <= BALANCE
    assert len(completed) + len(failed) == BURST
    # Every decline happened when the balance was below that order's price, and the
    # balance only goes down: what is left is below the cheapest declined order.
    assert BALANCE - spent < min(o.price_cents for o in failed)
