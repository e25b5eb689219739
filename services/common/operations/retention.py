"""Retention: inbox event ids and saga journal steps older than theirs are purged, in
small batches.

The inbox only has to remember an event id while Kafka may deliver that event again: as
long as the topic keeps it (retention.ms, 7 days on the saga topics and DLTs, see
deploy/kafka/topics.py, plus up to a day's segment) plus the time a consumer group may lag
or be reset. Keep INBOX_RETENTION_DAYS above that (default 14 days). The journal
(timelines, saga_step) is kept JOURNAL_RETENTION_DAYS (default 90); dead letters are never
purged. Each step deletes at most `batch_size` rows in its own short transaction, so it
never holds locks long.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlmodel import col

from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import SagaStep
from services.common.persistence.db import Database
from services.common.timeutil import utcnow
from services.common.worker import PeriodicWorker

#: How often the purge looks for old rows (it goes on at once while it finds a full batch).
PURGE_INTERVAL_S = 60.0


class Purge:
    """One purge step: delete up to `batch_size` rows whose `stamp` is older than the
    retention (`key` identifies a row)."""

    def __init__(
        self,
        db: Database,
        key: Any,
        stamp: Any,
        *,
        retention_days: float,
        batch_size: int = 500,
        key_follows_time: bool = False,
    ) -> None:
        self.db = db
        self.key_follows_time = key_follows_time
        self.key = key
        self.stamp = stamp
        self.retention = timedelta(days=retention_days)
        self.batch_size = batch_size
        #: Rows purged by this process so far.
        self.purged = 0

    def __call__(self) -> int:
        cutoff = utcnow() - self.retention
        with self.db.write() as session:
            if self.key_follows_time:
                oldest = session.execute(
                    select(self.stamp).order_by(self.key).limit(1)
                ).scalar_one_or_none()
                if oldest is None or _aware(oldest) >= cutoff:
                    return 0  # nothing old: no scan
            old = select(self.key).where(self.stamp < cutoff)
            if self.key_follows_time:
                # Oldest first along the key's index: stops at the first young rows.
                old = old.order_by(self.key)
            old = old.limit(self.batch_size)
            ids = list(session.execute(old).scalars())
            if ids:
                session.execute(delete(self.key.table).where(self.key.in_(ids)))
        self.purged += len(ids)
        # A full batch: more may be waiting, the worker calls again at once.
        return len(ids) if len(ids) == self.batch_size else 0


def _aware(moment: datetime) -> datetime:
    """SQLite returns naive UTC datetimes."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class InboxPurge(Purge):
    """Purges inbox rows (event ids) older than the retention."""

    def __init__(self, db: Database, *, retention_days: float, batch_size: int = 500) -> None:
        super().__init__(
            db,
            col(ProcessedEvent.event_id),
            col(ProcessedEvent.processed_at),
            retention_days=retention_days,
            batch_size=batch_size,
        )


class JournalPurge(Purge):
    """Purges saga journal steps older than the retention."""

    def __init__(self, db: Database, *, retention_days: float, batch_size: int = 500) -> None:
        super().__init__(
            db,
            col(SagaStep.id),
            col(SagaStep.recorded_at),
            retention_days=retention_days,
            batch_size=batch_size,
            key_follows_time=True,  # ids grow with time
        )


def purge_worker(
    db: Database,
    *,
    inbox_retention_days: float,
    journal_retention_days: float,
    interval_s: float = PURGE_INTERVAL_S,
) -> PeriodicWorker:
    """The background worker a service runs to purge its inbox and its journal."""
    inbox = InboxPurge(db, retention_days=inbox_retention_days)
    journal = JournalPurge(db, retention_days=journal_retention_days)
    return PeriodicWorker("retention", lambda: inbox() + journal(), interval_s)
