"""The Order service's metrics: counted once the transaction commits, never on a rollback."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from services.common.persistence.db import Database
from services.common.timeutil import utcnow
from services.order import metrics

pytestmark = pytest.mark.unit


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_ended_sagas_count_and_time_after_the_commit(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/order.db")
    completed = sample("paysaga_orders_total", status="completed")
    failed = sample("paysaga_orders_total", status="failed")
    timed = sample("paysaga_saga_duration_seconds_count", outcome="completed")
    under_2s = sample("paysaga_saga_duration_seconds_bucket", outcome="completed", le="2.5")
    long_ago = utcnow().replace(tzinfo=None) - timedelta(seconds=3)  # SQLite's naive UTC
    with db.write() as session:
        metrics.sagas_ended_after_commit(session, [("completed", long_ago), ("failed", utcnow())])
        assert sample("paysaga_orders_total", status="completed") == completed, "not yet"
    assert sample("paysaga_orders_total", status="completed") - completed == 1
    assert sample("paysaga_orders_total", status="failed") - failed == 1
    assert sample("paysaga_saga_duration_seconds_count", outcome="completed") - timed == 1
    assert sample("paysaga_saga_duration_seconds_bucket", outcome="completed", le="2.5") == (
        under_2s
    ), "three seconds old, from a naive timestamp"


def test_a_rolled_back_creation_counts_nothing(tmp_path: Path) -> None:
    db = Database(f"sqlite:///{tmp_path}/order.db")
    created = sample("paysaga_orders_total", status="created")
    with pytest.raises(RuntimeError), db.write() as session:
        metrics.orders_created_after_commit(session, 3)
        raise RuntimeError("rolled back")
    assert sample("paysaga_orders_total", status="created") == created
    with db.write() as session:
        metrics.orders_created_after_commit(session, 3)
    assert sample("paysaga_orders_total", status="created") - created == 3
