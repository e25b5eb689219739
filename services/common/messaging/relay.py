"""The outbox relay: publishes committed outbox rows with an idempotent producer, in order.

Each round takes the next rows (how depends on the database: services.common.messaging.claims),
publishes them and waits for the broker's confirmations. A row Kafka refuses for good (the
record itself is at fault: too large, invalid, not serializable) is parked at once: moved to
`outbox_parked` with its error, so the rows after it flow on. A row that fails otherwise
(authorization refusals and produce() exceptions included) is retried with backoff, and
parked only once it has failed `max_attempts` times AND is older than `stale_after_s` (a
topic missing from the metadata for a moment during a rolling restart, or an ACL granted a
moment late, must not park anything); errors that mean "the cluster is not reachable right
now" never count (services.common.messaging.delivery says which are which). A crash
publishes some rows again (never loses one); consumers drop the duplicates by event id. An
operator puts a parked row back with a new seq: `INSERT INTO outbox (event_id, topic, key,
value, headers, created_at, attempts, last_error) SELECT event_id, topic, key, value,
headers, created_at, 0, '' FROM outbox_parked WHERE seq = …` (then delete it from
outbox_parked).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Producer
from sqlalchemy import Row, delete, func, insert, select, update
from sqlmodel import Session, col

from services.common.crashpoints import crash_point
from services.common.messaging.claims import claims_for
from services.common.messaging.delivery import DeliveryCallback, Failure, error_of, record_failure
from services.common.messaging.outbox import OutboxRecord, ParkedRecord, decode_headers
from services.common.observability import metrics, tracing
from services.common.persistence.db import Database
from services.common.timeutil import utcnow
from services.common.worker import BackgroundWorker

log = logging.getLogger(__name__)


class OutboxRelay(BackgroundWorker):
    """Publishes a service's outbox; start() runs it on its own thread, stop() drains it."""

    def __init__(
        self,
        db: Database,
        new_producer: Callable[[], Producer],
        *,
        batch_size: int = 1000,
        idle_poll_s: float = 1.0,
        cleanup_interval_s: float = 1.0,
        flush_timeout_s: float = 10.0,
        max_attempts: int = 5,
        stale_after_s: float = 60.0,
    ) -> None:
        super().__init__("outbox-relay")
        self.db = db
        self.new_producer = new_producer
        self.producer = new_producer()
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.flush_timeout_s = flush_timeout_s
        self.max_attempts = max_attempts
        self.stale_after_s = stale_after_s
        #: How this relay takes its rows and deletes the published ones (per database kind).
        self.claims = claims_for(db, cleanup_interval_s=cleanup_interval_s)
        #: Rows parked by this process since it started.
        self.parked = 0

    @property
    def published_through(self) -> int:
        """Every row with seq <= this was confirmed or parked, though maybe not deleted yet."""
        return self.claims.published_through

    def _wake(self) -> None:
        """On stop: publish what is pending (as far as the broker allows), then end."""
        self.db.outbox_signal.set()

    def _run(self) -> None:
        backoff = 0.1
        while True:
            stopping = self._stopping.is_set()
            try:
                retry = False
                while True:
                    handled, failed = self.publish_pending()
                    retry = retry or failed > 0
                    if handled < self.batch_size or failed:
                        break
                self.delete_published(now=stopping)
            except Exception:
                log.exception("outbox relay round failed; retrying", extra={"backoff_s": backoff})
                retry = True
            if stopping:
                return
            if retry:
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.1
            self.db.outbox_signal.wait(self.idle_poll_s)
            self.db.outbox_signal.clear()

    # -- one round -------------------------------------------------------------------

    def publish_pending(self) -> tuple[int, int]:
        """Publish the next rows; return (rows settled: confirmed or parked, rows to retry)."""
        self.db.outbox_signal.clear()
        return self.claims.publish_pending(self, self.batch_size)

    def delete_published(self, *, now: bool = False) -> None:
        """Delete the published rows not deleted yet (SQLite: at most once per cleanup
        interval unless `now`)."""
        self.claims.delete_published(now=now)

    def publish(self, rows: Sequence[Row[Any]]) -> dict[int, Failure]:
        """Produce every row and wait for the broker's answers; return the failures by seq."""
        failures: dict[int, Failure] = {}
        started_ns = time.time_ns()
        for row in rows:
            try:
                self._produce(row, record_failure(row.seq, failures))
            except Exception as exc:
                failures[row.seq] = Failure.of_exception(exc)
        # Wait for every confirmation: a row not yet confirmed must not be produced twice by
        # the next round. librdkafka ends each wait by delivery.timeout.ms at the latest.
        while self.producer.flush(self.flush_timeout_s):
            log.warning("waiting for the broker to confirm outbox records")
        metrics.published(row.topic for row in rows if row.seq not in failures)
        if tracing.enabled():
            tracing.record_publish(
                (
                    (
                        r.topic,
                        r.event_id,
                        list(decode_headers(r.headers)),
                        error_of(failures, r.seq),
                    )
                    for r in rows
                ),
                started_ns,
            )
        crash_point("relay.after-publish")
        return failures

    def _produce(self, row: Row[Any], callback: DeliveryCallback) -> None:
        headers: list[tuple[str, str | bytes | None]] = list(decode_headers(row.headers))
        while True:
            try:
                self.producer.produce(
                    row.topic, key=row.key, value=row.value, headers=headers, on_delivery=callback
                )
                self.producer.poll(0)
                return
            except BufferError:  # the local queue is full: wait for the broker to drain it
                self.producer.poll(0.1)

    def settle_failures(
        self, session: Session, rows: Sequence[Row[Any]], failures: dict[int, Failure]
    ) -> set[int]:
        """Park the rows that failed for good; count an attempt on the others; return those
        to retry (their seqs)."""
        if not failures:
            return set()
        retry: set[int] = set()
        for row in rows:
            failure = failures.get(row.seq)
            if failure is None:
                continue
            attempts = row.attempts + (1 if failure.counts else 0)
            if failure.permanent or (attempts >= self.max_attempts and self._old(row)):
                self._park(session, row, attempts, failure.error)
                continue
            retry.add(row.seq)
            session.execute(
                update(OutboxRecord)
                .where(col(OutboxRecord.seq) == row.seq)
                .values(attempts=attempts, last_error=failure.error[:2000])
            )
        if retry:
            first = failures[min(retry)]
            log.warning(
                "outbox records not confirmed; they are sent again",
                extra={"unconfirmed": len(retry), "error": first.error},
            )
        if any(f.fatal for f in failures.values()):
            log.error("fatal producer error; starting a new producer")
            self.producer.flush(0)
            self.producer = self.new_producer()
        return retry

    def _old(self, row: Row[Any]) -> bool:
        created = row.created_at
        if created.tzinfo is None:  # SQLite returns naive UTC
            created = created.replace(tzinfo=UTC)
        return (utcnow() - created).total_seconds() > self.stale_after_s

    def _park(self, session: Session, row: Row[Any], attempts: int, error: str) -> None:
        session.execute(
            insert(ParkedRecord).values(
                seq=row.seq,
                event_id=row.event_id,
                topic=row.topic,
                key=row.key,
                value=row.value,
                headers=row.headers,
                created_at=row.created_at,
                attempts=attempts,
                error=error[:2000],
                parked_at=utcnow(),
            )
        )
        session.execute(delete(OutboxRecord).where(col(OutboxRecord.seq) == row.seq))
        self.parked += 1
        log.error(
            "outbox record parked: Kafka will not take it; the rows after it go on",
            extra={
                "seq": row.seq,
                "event_id": row.event_id,
                "topic": row.topic,
                "attempts": attempts,
                "error": error,
            },
        )

    # -- health ----------------------------------------------------------------------

    def problem(self) -> str | None:
        """Why the outbox needs an operator (parked rows, a stale backlog), or None."""
        # On SQLite, rows up to published_through are published, only not deleted yet.
        after = self.published_through
        with self.db.read() as session:
            parked = session.execute(select(func.count()).select_from(ParkedRecord)).scalar_one()
            oldest = session.execute(
                select(func.min(OutboxRecord.created_at)).where(col(OutboxRecord.seq) > after)
            ).scalar_one()
        problems = []
        if parked:
            problems.append(f"{parked} outbox record(s) parked (table outbox_parked)")
        if oldest is not None:
            if oldest.tzinfo is None:  # SQLite returns naive UTC
                oldest = oldest.replace(tzinfo=UTC)
            age = (utcnow() - oldest).total_seconds()
            if age > self.stale_after_s:
                problems.append(f"oldest unpublished outbox record is {age:.0f} s old")
        return "; ".join(problems) or None

    def backlog(self) -> tuple[int, datetime | None]:
        """Unpublished outbox rows: how many, and the oldest one's creation time (metrics)."""
        after = self.published_through
        with self.db.read() as session:
            count, oldest = session.execute(
                select(func.count(), func.min(OutboxRecord.created_at)).where(
                    col(OutboxRecord.seq) > after
                )
            ).one()
        return int(count), oldest
