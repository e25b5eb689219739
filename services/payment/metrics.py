"""The Payment service's metrics: payment decisions, approved or declined.

The name and its label are a contract (dashboards, alerts: docs/observability.md). The
counter is registered when this module is imported, which the handlers do, so it exists
before the process serves its metrics endpoint. Decisions are counted only once the
transaction that made them has committed: a rolled-back batch counts nothing.
"""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import Counter

from services.common.observability import metrics
from services.common.persistence.db import run_after_commit
from services.common.persistence.transaction import Transaction

PAYMENTS = Counter(
    "paysaga_payments_total",
    "Payment decisions on OrderPurchased events: approved or declined.",
    ["decision"],
)


def payments_decided_after_commit(session: Transaction, decisions: Mapping[str, int]) -> None:
    """Add `decisions` (approved/declined -> n) to the counter once the transaction commits."""
    counts = {decision: n for decision, n in decisions.items() if n}
    if counts and metrics.recording():
        run_after_commit(session, lambda: _count(counts))


def _count(counts: Mapping[str, int]) -> None:
    for decision, n in counts.items():
        PAYMENTS.labels(decision).inc(n)
