"""The Order service's metrics: orders by the status they reached, and saga durations.

Their names, labels and buckets are a contract (dashboards, alerts: docs/observability.md).
They are registered when this module is imported, which the handlers and the store do, so
they exist before the process serves its metrics endpoint. Each is counted only once the
transaction that made the change has committed: a rolled-back batch counts nothing.
"""

from __future__ import annotations

from collections import Counter as Tally
from collections.abc import Iterable
from datetime import UTC, datetime

from prometheus_client import Counter, Histogram

from services.common.observability import metrics
from services.common.persistence.db import run_after_commit
from services.common.persistence.transaction import Transaction

ORDERS = Counter(
    "paysaga_orders_total",
    "Orders by status reached: created (CreateOrder accepted), completed, failed.",
    ["status"],
)
SAGA_DURATION = Histogram(
    "paysaga_saga_duration_seconds",
    "Time from CreateOrder accepted (the order's creation) to the order terminal, by outcome.",
    ["outcome"],
    buckets=metrics.LATENCY_BUCKETS,
)


def orders_created_after_commit(session: Transaction, created: int) -> None:
    """Count `created` new orders once the transaction commits."""
    if created and metrics.recording():
        run_after_commit(session, lambda: ORDERS.labels("created").inc(created))


def sagas_ended_after_commit(session: Transaction, ended: Iterable[tuple[str, datetime]]) -> None:
    """Orders that reached `outcome` ("completed"/"failed"), created at the given times:
    count them and observe their saga durations once the transaction commits."""
    if not metrics.recording():
        return
    ended = list(ended)
    if ended:
        run_after_commit(session, lambda: _sagas_ended(ended))


def _sagas_ended(ended: list[tuple[str, datetime]]) -> None:
    now = datetime.now(UTC)
    for outcome, created_at in ended:
        if created_at.tzinfo is None:  # SQLite returns naive UTC
            created_at = created_at.replace(tzinfo=UTC)
        SAGA_DURATION.labels(outcome).observe(max(0.0, (now - created_at).total_seconds()))
    for outcome, count in Tally(outcome for outcome, _ in ended).items():
        ORDERS.labels(outcome).inc(count)
