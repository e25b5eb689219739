"""How a relay takes its outbox rows and forgets the published ones: one strategy per database.

Rows are published in `seq` order; a row counts as published only once the broker has
confirmed it (acks=all).

- PostgreSQL (N replicas), `PostgresClaims`: each round claims the oldest rows no other
  replica holds (`FOR UPDATE SKIP LOCKED`) in one short transaction that publishes them,
  deletes the confirmed ones and commits. A row is published by one replica at a time, and
  a replica never waits for rows another one holds.
- SQLite (one replica), `SqliteClaims`: one writer commits at a time and seq never
  decreases, so rows commit in seq order; the relay keeps its place by seq and deletes what
  was published about once a second, sparing a disk sync per round.

`claims_for(db)` picks the strategy for the database's kind.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol

from sqlalchemy import Integer, Row, bindparam, delete, select
from sqlmodel import Session, col

from services.common.messaging.delivery import Failure
from services.common.messaging.outbox import OutboxRecord
from services.common.persistence.db import Database

#: What the relay reads of an outbox row.
_ROW_COLUMNS = (
    col(OutboxRecord.seq),
    col(OutboxRecord.event_id),
    col(OutboxRecord.topic),
    col(OutboxRecord.key),
    col(OutboxRecord.value),
    col(OutboxRecord.headers),
    col(OutboxRecord.created_at),
    col(OutboxRecord.attempts),
)

# Built once: a relay runs one of these per round.
#: SQLite: the next rows after the relay's place (see the module docstring).
_PENDING_AFTER = (
    select(*_ROW_COLUMNS)
    .where(col(OutboxRecord.seq) > bindparam("after"))
    .order_by(col(OutboxRecord.seq))
    .limit(bindparam("limit", type_=Integer))
)
#: PostgreSQL: the oldest rows no other replica holds, locked until the round commits.
_CLAIM_PENDING = (
    select(*_ROW_COLUMNS)
    .order_by(col(OutboxRecord.seq))
    .limit(bindparam("limit", type_=Integer))
    .with_for_update(skip_locked=True)
)


class RowPublisher(Protocol):
    """What a claim strategy asks of the relay: publish rows, settle those that failed."""

    def publish(self, rows: Sequence[Row[Any]]) -> dict[int, Failure]:
        """Produce every row and wait for the broker's answers; return the failures by seq."""
        ...

    def settle_failures(
        self, session: Session, rows: Sequence[Row[Any]], failures: dict[int, Failure]
    ) -> set[int]:
        """Park the rows that failed for good, count an attempt on the others; return the
        seqs to retry."""
        ...


class OutboxClaims(ABC):
    """How one relay takes the next outbox rows on `db` and deletes those published."""

    def __init__(self, db: Database) -> None:
        self.db = db
        #: Every row with seq <= this was confirmed or parked, though maybe not deleted yet
        #: (0 where rows are deleted as soon as they are confirmed).
        self.published_through = 0

    @abstractmethod
    def publish_pending(self, publisher: RowPublisher, limit: int) -> tuple[int, int]:
        """Publish up to `limit` next rows; return (rows settled: confirmed or parked, rows
        to retry)."""

    @abstractmethod
    def delete_published(self, *, now: bool = False) -> None:
        """Delete the rows published but not deleted yet."""


class PostgresClaims(OutboxClaims):
    """PostgreSQL: claim the oldest rows no other replica holds, delete them on confirmation."""

    def publish_pending(self, publisher: RowPublisher, limit: int) -> tuple[int, int]:
        with self.db.write() as session:
            rows = session.execute(_CLAIM_PENDING, {"limit": limit}).all()
            if not rows:
                return 0, 0
            failures = publisher.publish(rows)
            retry = publisher.settle_failures(session, rows, failures)
            confirmed = [row.seq for row in rows if row.seq not in failures]
            if confirmed:
                session.execute(delete(OutboxRecord).where(col(OutboxRecord.seq).in_(confirmed)))
            return len(rows) - len(retry), len(retry)

    def delete_published(self, *, now: bool = False) -> None:
        """Nothing to do: each round deletes the rows it confirmed."""


class SqliteClaims(OutboxClaims):
    """SQLite: read on from the relay's place (`published_through`); delete what was
    published at most once per `cleanup_interval_s`."""

    def __init__(self, db: Database, *, cleanup_interval_s: float = 1.0) -> None:
        super().__init__(db)
        self.cleanup_interval_s = cleanup_interval_s
        self._deleted_through = 0
        self._last_cleanup = time.monotonic()

    def publish_pending(self, publisher: RowPublisher, limit: int) -> tuple[int, int]:
        with self.db.read() as session:
            rows = session.execute(
                _PENDING_AFTER, {"after": self.published_through, "limit": limit}
            ).all()
        if not rows:
            return 0, 0
        failures = publisher.publish(rows)
        retry: set[int] = set()
        if failures:
            with self.db.write() as session:
                retry = publisher.settle_failures(session, rows, failures)
                # Rows confirmed behind a row to retry are deleted now, so the watermark
                # (which stops at that row) never sends them twice or hides newer rows.
                first_retry = min(retry, default=None)
                behind = [
                    row.seq
                    for row in rows
                    if first_retry is not None and row.seq > first_retry and row.seq not in failures
                ]
                if behind:
                    session.execute(delete(OutboxRecord).where(col(OutboxRecord.seq).in_(behind)))
        return self._advance(rows, retry), len(retry)

    def _advance(self, rows: Sequence[Row[Any]], retry: set[int]) -> int:
        """Move the watermark up to the first row to retry; return the rows settled."""
        for row in rows:
            if row.seq in retry:
                break
            self.published_through = row.seq
        return len(rows) - len(retry)

    def delete_published(self, *, now: bool = False) -> None:
        """Delete the confirmed rows, at most once per cleanup interval unless `now`."""
        if self.published_through <= self._deleted_through:
            return
        if not now and time.monotonic() - self._last_cleanup < self.cleanup_interval_s:
            return
        through = self.published_through
        with self.db.write() as session:
            session.execute(delete(OutboxRecord).where(col(OutboxRecord.seq) <= through))
        self._deleted_through = through
        self._last_cleanup = time.monotonic()


def claims_for(db: Database, *, cleanup_interval_s: float = 1.0) -> OutboxClaims:
    """The claim strategy for `db`'s kind of database."""
    if db.is_sqlite:
        return SqliteClaims(db, cleanup_interval_s=cleanup_interval_s)
    return PostgresClaims(db)
