"""Crashes under load: kill -9 of each service and of the broker, and a full replay."""

from __future__ import annotations

import time

import pytest

from services.common.runtime.assembly import KAFKA_HEALTH as KAFKA
from services.common.serving.grpc_app import LIVENESS, NOT_SERVING, SERVING
from services.saga.topics import TOPICS
from tests.faults.probes import health
from tests.faults.scenario import Scenario, assert_holds
from tests.faults.stack import FaultStack
from tests.support import end_offsets, wait_for

pytestmark = pytest.mark.faults

BEFORE_S = 4.0  # load before the fault
DOWN_S = 3.0  # how long the broken part stays down
AFTER_S = 4.0  # load after it is back


@pytest.mark.parametrize("service", ["payment", "order"])
def test_service_killed_mid_load(stack: FaultStack, service: str) -> None:
    with Scenario(stack, f"kill -9 {service}") as run:
        time.sleep(BEFORE_S)
        stack.kill(service)
        time.sleep(DOWN_S)
        stack.restart(service)
        run.mark_recovering()
        time.sleep(AFTER_S)
        outcome = run.finish()
    assert_holds(outcome, stack)


def test_broker_killed_mid_load(stack: FaultStack) -> None:
    order = stack.order_address
    with Scenario(stack, "kill -9 broker") as run:
        time.sleep(BEFORE_S)
        stack.broker.kill()
        time.sleep(DOWN_S)
        # The outage is reported under its own health name; the Order service stays
        # ready (it takes orders into its database while the load goes on).
        wait_for("paysaga.kafka NOT_SERVING", lambda: health(order, KAFKA) == NOT_SERVING, 30)
        assert health(order, "") == SERVING
        assert health(order, LIVENESS) == SERVING
        stack.broker.start()
        run.mark_recovering()
        time.sleep(AFTER_S)
        outcome = run.finish()
        stack.wait_broker_serving()
    assert_holds(outcome, stack)


def test_replay_from_earliest_changes_nothing(stack: FaultStack) -> None:
    with Scenario(stack, "replay all topics") as run:
        time.sleep(BEFORE_S)
        stack.stop_services()
        stack.set_group_offsets(stack.base)  # this stack's earliest offsets
        backlog = end_offsets(stack.bootstrap, [*TOPICS])
        began = time.monotonic()
        stack.start_services()
        wait_for("both groups to re-consume every topic", lambda: stack.reached(backlog), 120, 0.3)
        run.recover_s = time.monotonic() - began
        time.sleep(AFTER_S)
        run.load.stop()
        wait_for("both groups to consume the rest", stack.caught_up, 120, 0.3)
        outcome = run.finish()
    assert_holds(outcome, stack)
