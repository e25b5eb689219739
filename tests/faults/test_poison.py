"""Poison on every topic under load: each record lands in its DLT with a reason, nothing stops."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from services.common.headers import header_dict
from tests.faults.poison import all_poison
from tests.faults.scenario import Scenario, assert_holds
from tests.faults.stack import FaultStack
from tests.support import read_topic

pytestmark = pytest.mark.faults


def test_poison_on_every_topic_is_dead_lettered(stack: FaultStack) -> None:
    poison = all_poison()
    with Scenario(stack, "poison x3 topics") as run:
        run.expected_dead_letters = len(poison)
        time.sleep(2.0)
        producer = Producer({"bootstrap.servers": stack.bootstrap, "enable.idempotence": True})
        for record in poison:
            producer.produce(
                record.topic, key=record.key, value=record.value, headers=record.headers
            )
            producer.poll(0)
            time.sleep(0.1)
        assert producer.flush(30) == 0
        time.sleep(3.0)
        outcome = run.finish()
    assert_holds(outcome, stack)

    for topic in {p.topic for p in poison}:
        wanted = {p.key: p for p in poison if p.topic == topic}
        dead = read_topic(
            stack.bootstrap, f"{topic}.dlt", lambda r, w=wanted: r.key() in w, len(wanted), 60
        )
        for record in dead:
            sent = wanted[record.key()]
            headers = header_dict(record.headers())
            assert headers.get("dlt_reason"), f"{sent.kind} on {topic}: no dlt_reason"
            assert headers.get("dlt_topic") == topic, sent.kind
            assert (record.value() or b"") == sent.value, f"{sent.kind}: payload altered"
        assert sorted(r.key() for r in dead) == sorted(wanted), f"{topic}: dead-lettered twice?"
