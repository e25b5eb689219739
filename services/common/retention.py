"""Inbox retention: event ids older than the retention are purged, in small batches.

The inbox only has to remember an event id while Kafka may deliver that event again: as
long as the topic keeps it (retention.ms, 7 days on the saga topics and DLTs, see
deploy/kafka/topics.py) plus the time a consumer group may lag or be reset. Keep
INBOX_RETENTION_DAYS above the topics' retention (default 14 days). Each step deletes at
most `batch_size` rows in its own short transaction, so it never holds locks long.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, select
from sqlmodel import col

from services.common.db import Database
from services.common.inbox import ProcessedEvent
from services.common.timeutil import utcnow
from services.common.worker import PeriodicWorker

#: How often the purge looks for old rows (it goes on at once while it finds a full batch).
PURGE_INTERVAL_S = 60.0


class InboxPurge:
    """One purge step: delete up to `batch_size` inbox rows older than the retention."""

    def __init__(self, db: Database, *, retention_days: float, batch_size: int = 500) -> None:
        self.db = db
        self.retention = timedelta(days=retention_days)
        self.batch_size = batch_size
        #: Rows purged by this process so far.
        self.purged = 0

    def __call__(self) -> int:
        cutoff = utcnow() - self.retention
        with self.db.write() as session:
            old = (
                select(col(ProcessedEvent.event_id))
                .where(col(ProcessedEvent.processed_at) < cutoff)
                .limit(self.batch_size)
            )
            ids = list(session.execute(old).scalars())
            if ids:
                session.execute(delete(ProcessedEvent).where(col(ProcessedEvent.event_id).in_(ids)))
        self.purged += len(ids)
        # A full batch: more may be waiting, the worker calls again at once.
        return len(ids) if len(ids) == self.batch_size else 0


def inbox_purge_worker(
    db: Database, *, retention_days: float, interval_s: float = PURGE_INTERVAL_S
) -> PeriodicWorker:
    """The background worker a service runs to purge its inbox."""
    return PeriodicWorker(
        "inbox-retention", InboxPurge(db, retention_days=retention_days), interval_s
    )
