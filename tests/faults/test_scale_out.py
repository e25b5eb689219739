"""Scale-out under crashes: 2 replicas of each service on PostgreSQL over 3 Kafka brokers.

A steady load spread over both Order replicas, while in turn one Order replica, one
Payment replica and one broker are killed with SIGKILL and started again. A WatchOrders
stream open on Order replica 0 the whole time must see every order end.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from deploy.kafka.cluster import KafkaCluster
from tests.faults.scenario import Scenario, assert_holds
from tests.faults.stack import FaultStack

pytestmark = pytest.mark.faults

BEFORE_S = 4.0  # load before the first fault
DOWN_S = 3.0  # how long each broken part stays down
AFTER_S = 4.0  # load after it is back, before the next fault
BROKER_START_S = 180.0  # a JVM recovering its logs on 2 busy cores can take a minute
#: Orders/s: a steady load well below what 2x2 replicas over 3 brokers sustain on 2 cores
#: (about 45/s): at saturation, heartbeats starve and the test would measure the machine.
RATE = 15.0


def test_kill_9_of_a_replica_of_each_service_and_of_a_broker(scaled_stack: FaultStack) -> None:
    stack = scaled_stack
    assert isinstance(stack.kafka, KafkaCluster)
    broker = stack.kafka.nodes[1]
    faults: list[tuple[Callable[[], object], Callable[[], object]]] = [
        (lambda: stack.kill("order", 1), lambda: stack.restart("order", 1)),
        (lambda: stack.kill("payment", 0), lambda: stack.restart("payment", 0)),
        (broker.kill, lambda: broker.start(timeout=BROKER_START_S)),
    ]
    name = "2 replicas, PostgreSQL, 3 brokers: kill -9 order-1, payment-0, kafka-1"
    with Scenario(stack, name, rate=RATE, watch=True) as run:
        time.sleep(BEFORE_S)
        for kill, restart in faults:
            kill()
            time.sleep(DOWN_S)
            restart()
            time.sleep(AFTER_S)
        run.mark_recovering()
        outcome = run.finish()
        stack.wait_broker_serving()
    assert_holds(outcome, stack)
    assert all(run.load.accepted_by), f"orders accepted per replica: {run.load.accepted_by}"
