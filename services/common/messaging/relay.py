"""The outbox relay: publishes committed outbox rows with an idempotent producer, in order.

Rows are published in `seq` order; a row counts as published only once the broker has
confirmed it (acks=all). How a replica takes its rows depends on the database:

- PostgreSQL (N replicas): each round claims the oldest rows no other replica holds
  (`FOR UPDATE SKIP LOCKED`) in one short transaction that publishes them, deletes the
  confirmed ones and commits. A row is published by one replica at a time, and a replica
  never waits for rows another one holds.
- SQLite (one replica): one writer commits at a time and seq never decreases, so rows
  commit in seq order; the relay keeps its place by seq and deletes what was published
  about once a second, sparing a disk sync per round.

A row Kafka refuses for good (an error code that no retry can change: too large, an
invalid record, a denied topic; or produce() raising anything but BufferError) is parked
at once: moved to `outbox_parked` with its error, so the rows after it flow on. A row
that fails otherwise is retried with backoff, and parked only once it has failed
`max_attempts` times AND is older than `stale_after_s` (a topic missing from the
metadata for a moment during a rolling restart must not park anything); errors that mean
"the cluster is not reachable right now" never count. (confluent-kafka leaves
KafkaError.retriable() unset on delivery reports, so errors are classified by code.)
A crash publishes some rows again (never loses one); consumers drop the duplicates by
event id. An operator puts a parked row back with a new seq:
`INSERT INTO outbox (event_id, topic, key, value, headers, created_at, attempts,
last_error) SELECT event_id, topic, key, value, headers, created_at, 0, '' FROM
outbox_parked WHERE seq = …` (then delete it from outbox_parked).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer
from sqlalchemy import Integer, Row, bindparam, delete, func, insert, select, update
from sqlmodel import Session, col

from services.common.crashpoints import crash_point
from services.common.messaging.outbox import OutboxRecord, ParkedRecord, decode_headers
from services.common.observability import metrics, tracing
from services.common.persistence.db import Database
from services.common.timeutil import utcnow
from services.common.worker import BackgroundWorker

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]

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

#: Errors that say the cluster cannot be reached or is failing over: a row is never parked
#: for these, however long they last.
_UNREACHABLE = {
    KafkaError._MSG_TIMED_OUT,
    KafkaError._TIMED_OUT,
    KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.LEADER_NOT_AVAILABLE,
    KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.NOT_ENOUGH_REPLICAS,
    KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.NETWORK_EXCEPTION,
}


#: Errors no retry can cure: the record (or our right to write it) is wrong.
_PERMANENT = {
    KafkaError.MSG_SIZE_TOO_LARGE,
    KafkaError.INVALID_MSG,
    KafkaError.INVALID_MSG_SIZE,
    KafkaError.INVALID_RECORD,
    KafkaError.RECORD_LIST_TOO_LARGE,
    KafkaError.TOPIC_EXCEPTION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
    KafkaError._INVALID_ARG,
    KafkaError._BAD_MSG,
}


@dataclass(frozen=True)
class Failure:
    """Why one row was not published."""

    error: str
    #: Kafka will never take this record as it is: park it now.
    permanent: bool
    #: The failure counts towards max_attempts (it is not an unreachable cluster).
    counts: bool
    #: The producer is unusable (not the record): a new producer retries.
    fatal: bool = False

    @classmethod
    def of_kafka(cls, err: KafkaError) -> Failure:
        code = err.code()
        if code == KafkaError._FATAL or err.fatal():
            return cls(str(err), permanent=False, counts=False, fatal=True)
        if code in _UNREACHABLE:
            return cls(str(err), permanent=False, counts=False)
        return cls(str(err), permanent=code in _PERMANENT, counts=True)

    @classmethod
    def of_exception(cls, exc: Exception) -> Failure:
        if isinstance(exc, KafkaException) and isinstance(exc.args[0], KafkaError):
            return cls.of_kafka(exc.args[0])
        return cls(f"{type(exc).__name__}: {exc}", permanent=True, counts=True)


def _error(failures: dict[int, Failure], seq: int) -> str | None:
    failure = failures.get(seq)
    return failure.error if failure is not None else None


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
        self.cleanup_interval_s = cleanup_interval_s
        self.flush_timeout_s = flush_timeout_s
        self.max_attempts = max_attempts
        self.stale_after_s = stale_after_s
        #: Every row with seq <= this was confirmed or parked (SQLite only, see above).
        self.published_through = 0
        self.ordered_commits = db.is_sqlite
        #: Rows parked by this process since it started.
        self.parked = 0
        self._deleted_through = 0
        self._last_cleanup = time.monotonic()

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
        if self.ordered_commits:
            with self.db.read() as session:
                rows = session.execute(
                    _PENDING_AFTER, {"after": self.published_through, "limit": self.batch_size}
                ).all()
            if not rows:
                return 0, 0
            failures = self._publish(rows)
            retry: set[int] = set()
            if failures:
                with self.db.write() as session:
                    retry = self._settle_failures(session, rows, failures)
                    # Rows confirmed behind a row to retry are deleted now, so the watermark
                    # (which stops at that row) never sends them twice or hides newer rows.
                    first_retry = min(retry, default=None)
                    behind = [
                        row.seq
                        for row in rows
                        if first_retry is not None
                        and row.seq > first_retry
                        and row.seq not in failures
                    ]
                    if behind:
                        session.execute(
                            delete(OutboxRecord).where(col(OutboxRecord.seq).in_(behind))
                        )
            return self._advance(rows, retry), len(retry)
        with self.db.write() as session:
            rows = session.execute(_CLAIM_PENDING, {"limit": self.batch_size}).all()
            if not rows:
                return 0, 0
            failures = self._publish(rows)
            retry = self._settle_failures(session, rows, failures)
            confirmed = [row.seq for row in rows if row.seq not in failures]
            if confirmed:
                session.execute(delete(OutboxRecord).where(col(OutboxRecord.seq).in_(confirmed)))
            return len(rows) - len(retry), len(retry)

    def _publish(self, rows: Sequence[Row[Any]]) -> dict[int, Failure]:
        """Produce every row and wait for the broker's answers; return the failures by seq."""
        failures: dict[int, Failure] = {}
        started_ns = time.time_ns()
        for row in rows:
            try:
                self._produce(row, self._on_delivery(row.seq, failures))
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
                    (r.topic, r.event_id, list(decode_headers(r.headers)), _error(failures, r.seq))
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
            except BufferError:
                self.producer.poll(0.1)

    @staticmethod
    def _on_delivery(seq: int, failures: dict[int, Failure]) -> DeliveryCallback:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                failures[seq] = Failure.of_kafka(err)

        return on_delivery

    def _settle_failures(
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

    def _advance(self, rows: Sequence[Row[Any]], retry: set[int]) -> int:
        """SQLite: move the watermark up to the first row to retry; return the rows settled."""
        for row in rows:
            if row.seq in retry:
                break
            self.published_through = row.seq
        return len(rows) - len(retry)

    def delete_published(self, *, now: bool = False) -> None:
        """SQLite: delete the confirmed rows, at most once per cleanup interval unless `now`."""
        if self.published_through <= self._deleted_through:
            return
        if not now and time.monotonic() - self._last_cleanup < self.cleanup_interval_s:
            return
        through = self.published_through
        with self.db.write() as session:
            session.execute(delete(OutboxRecord).where(col(OutboxRecord.seq) <= through))
        self._deleted_through = through
        self._last_cleanup = time.monotonic()

    # -- health ----------------------------------------------------------------------

    def problem(self) -> str | None:
        """Why the outbox needs an operator (parked rows, a stale backlog), or None."""
        # On SQLite, rows up to published_through are published, only not deleted yet.
        after = self.published_through if self.ordered_commits else 0
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
        after = self.published_through if self.ordered_commits else 0
        with self.db.read() as session:
            count, oldest = session.execute(
                select(func.count(), func.min(OutboxRecord.created_at)).where(
                    col(OutboxRecord.seq) > after
                )
            ).one()
        return int(count), oldest
