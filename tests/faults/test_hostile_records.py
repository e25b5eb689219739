"""Records crafted to break the dead-letter path, keyed as real users': each one ends on its
`<topic>.dlt`, and the same users' later orders COMPLETE within seconds (SQLite and PostgreSQL).

They go through the real broker onto `orders` (the Payment service's consumer) and
`transactions` (the Order service's), into the partitions of users 2 and 3, under the
usual load; then orders of users 2 and 3 are placed. A record that stalled its partition
would hold those orders until their saga deadline failed them.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from deploy.kafka.runtime import KafkaRuntime
from paysaga.v1 import orders_pb2
from services.common.headers import header_dict
from services.common.messaging.kafka import PARTITIONER
from services.common.messaging.outbox import DLT_HEADERS
from tests.faults.poison import HOSTILE_ID, Poison, hostile_for
from tests.faults.scenario import Scenario, assert_holds
from tests.faults.stack import FaultStack
from tests.support import read_topic, wait_terminal

pytestmark = pytest.mark.faults

USERS = (2, 3)
#: How soon an order placed after the hostile records must be COMPLETED (the saga deadline
#: of these stacks is 60 s: a stalled partition would hold it far longer).
COMPLETE_WITHIN_S = 20.0


@pytest.fixture(params=["sqlite", "postgres"])
def stack_on(
    request: pytest.FixtureRequest, fault_broker: KafkaRuntime, tmp_path: Path
) -> Iterator[FaultStack]:
    """Both services on fresh databases of each kind (one replica each)."""
    postgres = request.getfixturevalue("postgres_server") if request.param == "postgres" else None
    fault_stack = FaultStack(
        fault_broker, tmp_path, f"hostile-{request.param}", db=request.param, postgres=postgres
    )
    with fault_stack.running():
        yield fault_stack


def send(bootstrap: str, records: list[Poison]) -> None:
    producer = Producer(
        {"bootstrap.servers": bootstrap, "enable.idempotence": True, "partitioner": PARTITIONER}
    )
    for record in records:
        producer.produce(record.topic, key=record.key, value=record.value, headers=record.headers)
        producer.poll(0)
    assert producer.flush(30) == 0, "the hostile records were not all sent"


def place_orders(stack: FaultStack, run: Scenario) -> list[str]:
    """One order per user in USERS, each with a new request id; their ids."""
    stub = stack.orders_stub()
    ids = []
    for user in USERS:
        request = orders_pb2.CreateOrderRequest(
            user_id=user, product_id=1, request_id=str(uuid.uuid4())
        )
        ids.append(stub.CreateOrder(request, timeout=10).order.id)
    run.extra_accepted |= set(ids)
    return ids


def test_hostile_records_are_dead_lettered_and_later_orders_complete(stack_on: FaultStack) -> None:
    stack = stack_on
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    hostile = [
        record
        for topic in ("orders", "transactions")
        for user in USERS
        for record in hostile_for(topic, str(user).encode(), rng)
    ]
    with Scenario(stack, f"hostile records ({stack.db})") as run:
        run.expected_dead_letters = len(hostile)
        time.sleep(2.0)
        send(stack.bootstrap, hostile)
        placed = time.monotonic()
        later = place_orders(stack, run)
        orders_api = stack.orders_stub()
        for order_id in later:
            left = COMPLETE_WITHIN_S - (time.monotonic() - placed)
            ended = wait_terminal(orders_api, order_id, max(left, 0.1))
            assert ended.status == orders_pb2.ORDER_STATUS_COMPLETED, (
                f"seed {seed}: order {order_id} of user {ended.user_id} ended "
                f"{orders_pb2.OrderStatus.Name(ended.status)}: {ended.failure_reason}"
            )
        time.sleep(3.0)
        outcome = run.finish()
    assert_holds(outcome, stack)

    for topic in ("orders", "transactions"):
        wanted = {header_dict(p.headers)[HOSTILE_ID]: p for p in hostile if p.topic == topic}

        def ours(record: object, wanted: dict[str, Poison] = wanted) -> bool:
            return header_dict(record.headers()).get(HOSTILE_ID) in wanted  # type: ignore[attr-defined]

        dead = read_topic(stack.bootstrap, f"{topic}.dlt", ours, len(wanted), 60)
        for record in dead:
            headers = record.headers() or []
            sent = wanted.pop(header_dict(headers)[HOSTILE_ID])
            why = f"seed {seed}: {sent.kind} on {topic}"
            assert (record.key(), record.value() or b"") == (sent.key, sent.value), why
            assert headers[: -len(DLT_HEADERS)] == sent.headers, f"{why}: headers altered"
            found = header_dict(headers[-len(DLT_HEADERS) :])
            assert found["dlt_topic"] == topic and found["dlt_reason"], why
        assert not wanted, f"seed {seed}: never dead-lettered: {[p.kind for p in wanted.values()]}"
