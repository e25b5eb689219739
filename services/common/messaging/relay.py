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
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from functools import partial
from typing import Any

from confluent_kafka import Producer
from sqlalchemy import func, select, update
from sqlmodel import col

from services.common.crashpoints import crash_point
from services.common.messaging.claims import claims_for
from services.common.messaging.delivery import DeliveryCallback, Failure, error_of
from services.common.messaging.outbox import (
    ClaimedRow,
    OutboxRecord,
    ParkedRecord,
    decode_headers,
)
from services.common.messaging.parking import park, rows_changed
from services.common.messaging.rounds import DeliveryPump, Recheck, Round
from services.common.observability import metrics, tracing
from services.common.persistence.db import Database, run_after_commit
from services.common.persistence.transaction import Transaction
from services.common.timeutil import utcnow
from services.common.worker import BackgroundWorker

log = logging.getLogger(__name__)


class OutboxRelay(BackgroundWorker):
    """Publishes a service's outbox; start() runs it on its own thread, stop() drains it.

    Up to `max_rounds` rounds are in flight at once: woken by a commit, the relay claims
    and produces the new rows while earlier rounds still wait for the broker's answers
    (which a `DeliveryPump` thread hears), and settles each round once it is answered, in
    order. A new round overlaps one in flight only once that one has waited
    `overlap_after_s`: where the broker answers fast (one node) the rows committed
    meanwhile go out together with the next round, as they did before rounds overlapped,
    sparing Kafka a request each; where it is slow (acks=all on three nodes) they no
    longer wait for the whole answer. A round that follows an answered one starts no sooner
    than `round_interval_s` after that one began: under load the rows committed meanwhile
    go out together (fewer produce requests, fetches and consumer transactions); a commit
    after a quiet spell goes out at once. After a round with rows to retry the relay lets the
    rounds in flight finish, then waits (backing off) before it claims again.
    """

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
        max_rounds: int = 2,
        overlap_after_s: float = 0.003,
        round_interval_s: float = 0.0,
        lease_s: float = 10.0,
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
        self.max_rounds = max(1, max_rounds)
        self.overlap_after_s = overlap_after_s
        self.round_interval_s = round_interval_s
        self._last_round_started = float("-inf")
        #: How this relay takes its rows and forgets the published ones (per database kind).
        self.claims = claims_for(db, cleanup_interval_s=cleanup_interval_s, lease_s=lease_s)
        #: Leases are renewed for rounds in flight longer than this (PostgreSQL).
        self.renew_after_s = lease_s / 3
        #: Rows parked by this process since it started.
        self.parked = 0
        self._pump = DeliveryPump(lambda: self.producer)
        self._producer_failed = False

    @property
    def published_through(self) -> int:
        """Every row with seq <= this was confirmed or parked, though maybe not deleted yet."""
        return self.claims.published_through

    def start(self) -> None:
        self._pump.start()
        super().start()

    def stop(self, timeout_s: float = 10.0) -> None:
        super().stop(timeout_s)
        self._pump.stop(timeout_s)

    def is_alive(self) -> bool:
        return super().is_alive() and self._pump.is_alive()

    def _wake(self) -> None:
        """On stop: publish what is pending (as far as the broker allows), then end."""
        self.db.outbox_signal.wake_here()

    def _run(self) -> None:
        signal = self.db.outbox_signal
        rounds: deque[Round] = deque()
        backoff = 0.1
        look = True  # rows may wait: at start, after a commit, a full window, a freeing settle
        retrying = False  # a round had rows to retry: finish the rounds in flight, then wait
        recheck = Recheck(self.idle_poll_s)  # rows held back by another relay's lease
        while True:
            if self._stopping.is_set():
                self._finish(rounds)
                return
            signal.clear()
            look = signal.take_committed() or recheck.due() or look
            overlap_in: float | None = None  # a round may start in this long (None: not)
            try:
                while rounds and rounds[0].answered:
                    _, retry = self._settle(rounds.popleft())
                    if retry:
                        retrying = True
                    elif not retrying:
                        backoff = 0.1
                    look = look or self.claims.frees_held_rows
                if retrying and not rounds:
                    self._after_failures()
                    self._stopping.wait(backoff)
                    backoff = min(backoff * 2, 5.0)
                    retrying, look = False, True
                    continue
                self._renew(rounds)
                overlap_in = self._overlap_wait(rounds) if look and not retrying else None
                if overlap_in == 0.0:
                    overlap_in = None
                    rows = self.claims.claim(self.batch_size)
                    look = len(rows) == self.batch_size or self.claims.more_beyond
                    recheck.after_claim(self.claims.held_back)
                    if rows:
                        rounds.append(self._start_round(rows))
                        continue
                # Nothing more to claim now: a moment for the deletes (SQLite: at most once
                # per cleanup interval, never ahead of a claim a commit woke the relay for).
                self.claims.delete_published()
            except Exception:
                log.exception("outbox relay round failed; retrying", extra={"backoff_s": backoff})
                self._lose_track(rounds)
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                look = True
                continue
            # Woken by a commit or a round answered; or, on time, to look (poll), to overlap a
            # round in flight, to look again at held-back rows, to renew leases.
            timeout = self.renew_after_s if rounds else self.idle_poll_s
            for soon in (overlap_in, recheck.wait_s()):
                if soon is not None:
                    timeout = min(soon, timeout)
            if not signal.wait(timeout) and not rounds:
                look = True  # the idle poll

    def _overlap_wait(self, rounds: deque[Round]) -> float | None:
        """How long until a new round may start (0: now; None: not before one is answered)."""
        if not rounds:
            return max(0.0, self._last_round_started + self.round_interval_s - time.monotonic())
        if len(rounds) >= self.max_rounds:
            return None
        return max(0.0, rounds[-1].started + self.overlap_after_s - time.monotonic())

    def _finish(self, rounds: deque[Round]) -> None:
        """On stop: settle the rounds in flight, publish what is pending, delete what was."""
        try:
            self._await(rounds)
            while rounds:
                self._settle(rounds.popleft())
            while True:
                handled, failed = self.publish_pending()
                if handled < self.batch_size or failed:
                    break
            self.delete_published(now=True)
        except Exception:
            log.exception("outbox relay could not finish; the rows left are published later")

    def _lose_track(self, rounds: deque[Round]) -> None:
        """After an error: wait for the rounds in flight, drop them unsettled (their rows
        are published again later, never lost) and start again from the database."""
        try:
            self._await(rounds)
        except Exception:
            log.exception("waiting for the rounds in flight failed")
        rounds.clear()
        self.claims.reset()

    def _await(self, rounds: deque[Round]) -> None:
        """Wait for the broker to answer for every round in flight (librdkafka ends each
        wait by delivery.timeout.ms at the latest)."""
        while any(not r.answered for r in rounds):
            if self.producer.flush(self.flush_timeout_s):
                log.warning("waiting for the broker to confirm outbox records")

    def _renew(self, rounds: deque[Round]) -> None:
        now = time.monotonic()
        stale = [r for r in rounds if now - r.renewed > self.renew_after_s]
        if stale:
            self.claims.renew([row for r in stale for row in r.rows])
            for r in stale:
                r.renewed = now

    def _after_failures(self) -> None:
        """No round in flight after failures: read the rows to retry again, with a new
        producer if the last one failed for good."""
        self.claims.reset()
        if self._producer_failed:
            log.error("fatal producer error; starting a new producer")
            self.producer.flush(0)
            self.producer = self.new_producer()
            self._producer_failed = False

    # -- one round -------------------------------------------------------------------

    def publish_pending(self) -> tuple[int, int]:
        """One round, start to end: claim the next rows, publish them, wait for the
        broker's answers and settle them; return (rows settled: confirmed or parked, rows
        to retry)."""
        self.db.outbox_signal.clear()
        rows = self.claims.claim(self.batch_size)
        if not rows:
            return 0, 0
        flight = self._start_round(rows)
        self._await(deque([flight]))
        settled, retry = self._settle(flight)
        if retry or self._producer_failed:
            self._after_failures()
        return settled, retry

    def delete_published(self, *, now: bool = False) -> None:
        """Delete the published rows not deleted yet (SQLite: at most once per cleanup
        interval unless `now`)."""
        self.claims.delete_published(now=now)

    def _start_round(self, rows: Sequence[ClaimedRow]) -> Round:
        """Produce every row of a new round (the answers come later)."""
        flight = Round(rows, self.db.outbox_signal.wake_to_settle)
        self._last_round_started = flight.started
        for row in rows:
            try:
                self._produce(row, flight.on_delivery(row.seq))
            except Exception as exc:
                flight.not_produced(row.seq, exc)
        self._pump.produced()
        return flight

    def _settle(self, flight: Round) -> tuple[int, int]:
        """A round the broker answered: forget what it confirmed, settle its failures."""
        crash_point("relay.after-publish")
        rows, failures = flight.rows, flight.failures
        result = self.claims.settle(self, rows, failures)
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
                flight.started_ns,
            )
        return result

    def _produce(self, row: ClaimedRow, callback: DeliveryCallback) -> None:
        # The answers are served by the DeliveryPump (or the caller's flush), not here.
        headers: Any = decode_headers(row.headers)
        while True:
            try:
                self.producer.produce(
                    row.topic, key=row.key, value=row.value, headers=headers, on_delivery=callback
                )
                return
            except BufferError:  # the local queue is full: wait for the broker to drain it
                self.producer.poll(0.1)

    def settle_failures(
        self, session: Transaction, rows: Sequence[ClaimedRow], failures: dict[int, Failure]
    ) -> set[int]:
        """Park the rows that failed for good; count an attempt on the others; return those
        to retry (their seqs)."""
        if not failures:
            return set()
        retry: set[int] = set()
        parked = 0
        for row in rows:
            failure = failures.get(row.seq)
            if failure is None:
                continue
            attempts = row.attempts + (1 if failure.counts else 0)
            if failure.permanent or (attempts >= self.max_attempts and self._old(row)):
                parked += park(session, row, attempts, failure.error, self._still_ours())
                continue
            given_up = session.execute(
                update(OutboxRecord)
                .where(col(OutboxRecord.seq) == row.seq)
                .where(self._still_ours())
                # Its lease is given up: the row is claimed again, first of its key.
                .values(
                    attempts=attempts,
                    last_error=failure.error[:2000],
                    claimed_by=None,
                    claimed_until=None,
                )
            )
            if rows_changed(given_up):  # else another relay took the row over: theirs
                retry.add(row.seq)
        if parked:  # counted once they are parked for good: a failed commit parked none
            run_after_commit(session, partial(self._count_parked, parked))
        if retry:
            first = failures[min(retry)]
            log.warning(
                "outbox records not confirmed; they are sent again",
                extra={"unconfirmed": len(retry), "error": first.error},
            )
        if any(f.fatal for f in failures.values()):
            self._producer_failed = True  # replaced once no round is in flight
        return retry

    def _count_parked(self, rows: int) -> None:
        self.parked += rows

    def _old(self, row: ClaimedRow) -> bool:
        return (utcnow() - row.created_at).total_seconds() > self.stale_after_s  # aware UTC

    def _still_ours(self) -> Any:
        """Rows whose lease this relay still holds (every row, where rows are not leased)."""
        holder = self.claims.lease_holder
        if holder is None:
            return col(OutboxRecord.claimed_by).is_(None)
        return col(OutboxRecord.claimed_by) == holder

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
