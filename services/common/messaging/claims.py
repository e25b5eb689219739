"""How a relay takes its outbox rows and forgets the published ones: one strategy per database.

A relay publishes in rounds: `claim` takes the next rows in `seq` order, the relay produces
them, and once the broker has answered for every row of the round (acks=all) `settle`
forgets the confirmed rows and hands the failed ones to the relay (park them, or count an
attempt and retry them). Rounds may overlap: the relay claims and produces a new round
while earlier ones wait for their acknowledgements; rounds are settled in the order they
were claimed. No transaction stays open while Kafka answers.

Per-key order. Kafka keeps order per partition, and a record's partition is its key's
(services.common.messaging.kafka.PARTITIONER), so rows of one topic and key must reach
Kafka in seq order. One relay's rows do: it produces them in seq order on one idempotent
producer, which keeps that order across overlapping rounds and its own retries. Between
relays:

- PostgreSQL (N replicas), `PostgresClaims`. A claim is a lease, taken and committed by one
  statement: `UPDATE outbox SET claimed_by = <relay>, claimed_until = now() + <lease> WHERE
  seq IN (<the oldest rows nobody leases, FOR UPDATE SKIP LOCKED>) ... RETURNING ...`. A row
  is claimed only if every earlier row of its topic and key still in the outbox is claimed
  by the same statement or is in flight from this same relay (leased by it, lease live). An
  earlier row leased by another relay, or locked right now by another relay's claim (SKIP
  LOCKED passed it by), holds the later rows of its key back: two relays never have rows
  of one key in flight at once. When a relay settles a round it deletes the confirmed rows
  (a second short transaction), and the same statement says whether unleased rows of their
  keys wait behind them (rows another relay's claim held back, or rows nobody claimed yet):
  only then does it claim again at once, taking them; otherwise the next commit wakes it
  (a claim after every round would find nothing, most times). A crash between the
  broker's confirmation and that delete leaves the rows leased until the lease ends; then
  they are claimed again, with the later rows of their keys after them, in order, and
  published a second time: the consumers' inbox drops the copies, and the first copy of
  every event came in order. A relay renews its leases while a round waits longer than a
  third of the lease, and takes a new identity at every start and after any error, so it
  never mistakes a lease it lost track of for a row in flight. A relay cut off from the
  database for longer than a whole lease while its rows are in flight may see them published
  again by another relay: duplicates, which the inbox drops. These bookkeeping transactions
  (claims, deletes, attempts) do not wait for the WAL flush
  (`Database.write_core(durable=False)`): losing one to a server crash only publishes rows
  again. A claim, a delete and a renewal are each one statement, sent in autocommit mode
  (`Database.commit_alone`): one round trip, not three. A connection lost during a claim may
  leave its lease committed unbeknown to the relay, as a loss during a COMMIT always could:
  the relay takes a new identity, the orphaned lease holds its keys back until it ends, and
  its rows are then published (again, at worst).
- SQLite (one relay per database file), `SqliteClaims`: one writer commits at a time and
  seq never decreases, so rows commit in seq order; the relay reads on after the last row
  it produced and deletes what was published about once a second, sparing a disk sync per
  round. `published_through` is the seq up to which every row was confirmed or parked.

A row that failed and waits for its retry (no lease, an error recorded) does not stall its
key: on SQLite the rows produced behind it go on; on PostgreSQL it is claimed again with
them, first, so they may reach Kafka before its retry does. Failure bookkeeping is done
only by the relay that holds a row's lease: a relay whose lease was taken over leaves the
row to its new holder. Rows with a null key go to any partition and have no order to keep.

`claims_for(db)` picks the strategy for the database's kind.
"""

from __future__ import annotations

import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Protocol

from sqlalchemy import bindparam, delete, func, text, update
from sqlmodel import col

from services.common.messaging.delivery import Failure
from services.common.messaging.outbox import OUTBOX_TABLE, ClaimedRow, OutboxRecord
from services.common.persistence.bulk import from_sqlite_time
from services.common.persistence.db import Database
from services.common.persistence.prepared import Prepared
from services.common.persistence.transaction import Transaction

#: What the relay reads of an outbox row.
_ROW_COLUMNS = tuple(OUTBOX_TABLE.c[name] for name in ClaimedRow._fields)

# Built once: a relay runs these every round.
#: SQLite: the next rows after the relay's place (see the module docstring), in the
#: driver's own SQL: a relay claims after every commit, and through SQLAlchemy's session an
#: empty claim cost 20 times what the query does (a fifth of the Payment process's CPU).
_PENDING_AFTER_SQL = (
    f"SELECT {', '.join(ClaimedRow._fields)} FROM {OUTBOX_TABLE.name} "
    "WHERE seq > ? ORDER BY seq LIMIT ?"
)
_DELETE_SEQS = delete(OutboxRecord).where(
    col(OutboxRecord.seq).in_(bindparam("seqs", expanding=True))
)
#: PostgreSQL: lease the oldest rows nobody holds whose key no other relay has in flight
#: (see the module docstring). `held_back`: per key among the candidates, the first earlier
#: row that holds it back (not a candidate, not this relay's own in flight). A row waiting
#: for its retry holds no lease, so it is a candidate itself and goes first; only when
#: another relay's claim has it locked right now does it hold its key back. A last row of
#: nulls but for `attempts`, the number of candidates, says that candidates were held back.
_CLAIM_SQL = """
    WITH candidate AS (
        SELECT seq, topic, key FROM outbox
        WHERE claimed_until IS NULL OR claimed_until < now()
        ORDER BY seq
        LIMIT :limit
        FOR UPDATE SKIP LOCKED
    ), held_back AS (
        SELECT o.topic, o.key, min(o.seq) AS first_seq
        FROM outbox o
        WHERE o.seq < (SELECT max(seq) FROM candidate)
          AND o.seq NOT IN (SELECT seq FROM candidate)
          AND (o.topic, o.key) IN (SELECT topic, key FROM candidate)
          AND NOT COALESCE(o.claimed_by = :relay AND o.claimed_until >= now(), false)
        GROUP BY o.topic, o.key
    ), claimed AS (
        UPDATE outbox
        SET claimed_by = :relay, claimed_until = now() + make_interval(secs => :lease_s)
        FROM candidate c
        LEFT JOIN held_back h ON h.topic = c.topic AND h.key = c.key
        WHERE outbox.seq = c.seq AND (h.first_seq IS NULL OR c.seq < h.first_seq)
        RETURNING outbox.seq, outbox.event_id, outbox.topic, outbox.key, outbox.value,
            outbox.headers, outbox.created_at, outbox.attempts
    )
    SELECT seq, event_id, topic, key, value, headers, created_at, attempts FROM claimed
    UNION ALL  -- a marker row, nulls but the number of candidates: some were held back
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, (SELECT count(*) FROM candidate)::int
    WHERE (SELECT count(*) FROM candidate) > (SELECT count(*) FROM claimed)
    """
_CLAIM = Prepared(text(_CLAIM_SQL).columns(*_ROW_COLUMNS))
#: PostgreSQL: delete a round's confirmed rows and say whether unleased rows of their keys
#: wait behind them (the statement's snapshot still shows the deleted rows: left out by seq).
_DELETE_LOOKING_BEHIND_SQL = """
    WITH gone AS (
        DELETE FROM outbox WHERE seq = ANY(:seqs) RETURNING seq, topic, key
    )
    SELECT EXISTS (
        SELECT 1 FROM outbox o JOIN gone g ON o.topic = g.topic AND o.key = g.key
        WHERE o.seq > (SELECT min(seq) FROM gone)
          AND o.seq <> ALL(:seqs)
          AND (o.claimed_until IS NULL OR o.claimed_until < now())
    )
    """
_DELETE_LOOKING_BEHIND = Prepared(text(_DELETE_LOOKING_BEHIND_SQL))
_RENEW = Prepared(
    update(OutboxRecord)
    .where(col(OutboxRecord.claimed_by) == bindparam("relay"))
    .where(col(OutboxRecord.seq).in_(bindparam("seqs", expanding=True)))
    .values(claimed_until=func.now() + func.make_interval(0, 0, 0, 0, 0, 0, bindparam("lease_s"))),
    expanding=("seqs",),
)


class FailureSettler(Protocol):
    """What a claim strategy asks of the relay: settle the rows that failed."""

    def settle_failures(
        self, session: Transaction, rows: Sequence[ClaimedRow], failures: dict[int, Failure]
    ) -> set[int]:
        """Park the rows that failed for good, count an attempt on the others (and give up
        their lease); return the seqs to retry."""
        ...


class OutboxClaims(ABC):
    """How one relay takes the next outbox rows on `db` and forgets those published."""

    #: The last settle freed keys with rows waiting behind them (rows another relay's claim
    #: held back), or had rows to retry: the relay claims again at once, not at a commit.
    frees_held_rows = False
    #: The last claim's window of candidates was full though it held some back: more rows
    #: may wait beyond it, and the relay claims again at once (as after a full claim).
    more_beyond = False
    #: The last claim left rows behind because another relay holds their keys: that relay
    #: claims them again once it settles, unless a claim of this one had them locked at
    #: that moment; the relay looks again shortly (see OutboxRelay).
    held_back = False

    def __init__(self, db: Database) -> None:
        self.db = db
        #: Every row with seq <= this was confirmed or parked, though maybe not deleted yet
        #: (0 where rows are deleted as soon as they are confirmed).
        self.published_through = 0

    @property
    def lease_holder(self) -> str | None:
        """Who this relay's leases name (None where rows are not leased)."""
        return None

    @abstractmethod
    def claim(self, limit: int) -> list[ClaimedRow]:
        """Take up to `limit` next rows to publish, in seq order."""

    @abstractmethod
    def settle(
        self, settler: FailureSettler, rows: Sequence[ClaimedRow], failures: dict[int, Failure]
    ) -> tuple[int, int]:
        """After the broker answered for all of a round's `rows`: forget the confirmed ones,
        settle the failed ones; return (rows settled: confirmed or parked, rows to retry)."""

    @abstractmethod
    def renew(self, rows: Sequence[ClaimedRow]) -> None:
        """Keep these rows, still in flight, claimed."""

    @abstractmethod
    def reset(self) -> None:
        """No round is in flight: start again from what the database says is unpublished
        (after a round with rows to retry, or after an error lost track of a round)."""

    @abstractmethod
    def delete_published(self, *, now: bool = False) -> None:
        """Delete the rows published but not deleted yet."""


class PostgresClaims(OutboxClaims):
    """PostgreSQL: lease the oldest rows no other relay holds, delete them on confirmation."""

    def __init__(self, db: Database, *, lease_s: float = 10.0) -> None:
        super().__init__(db)
        self.lease_s = lease_s
        self.relay_id = _new_relay_id(db)

    @property
    def lease_holder(self) -> str | None:
        return self.relay_id

    def claim(self, limit: int) -> list[ClaimedRow]:
        params = {"limit": limit, "relay": self.relay_id, "lease_s": self.lease_s}
        found = [ClaimedRow(*row) for row in self.db.commit_alone(_CLAIM, params)]  # one trip
        rows = [row for row in found if row.seq is not None]
        marker = next((row for row in found if row.seq is None), None)
        self.held_back = marker is not None
        self.more_beyond = marker is not None and marker.attempts >= limit
        return sorted(rows, key=lambda row: row.seq)  # RETURNING keeps no order

    def settle(
        self, settler: FailureSettler, rows: Sequence[ClaimedRow], failures: dict[int, Failure]
    ) -> tuple[int, int]:
        confirmed = [row.seq for row in rows if row.seq not in failures]
        if not failures:  # the common case: one statement, one round trip
            self.frees_held_rows = False
            if confirmed:
                found = self.db.commit_alone(_DELETE_LOOKING_BEHIND, {"seqs": confirmed})
                self.frees_held_rows = bool(found and found[0][0])
            return len(rows), 0
        self.frees_held_rows = True  # rows to retry, or parked: look again, as after a commit
        with self.db.write_core(durable=False) as session:
            retry = settler.settle_failures(session, rows, failures)
            if confirmed:
                session.execute(_DELETE_SEQS, {"seqs": confirmed})
        return len(rows) - len(retry), len(retry)

    def renew(self, rows: Sequence[ClaimedRow]) -> None:
        params = {"relay": self.relay_id, "seqs": [r.seq for r in rows], "lease_s": self.lease_s}
        self.db.commit_alone(_RENEW, params)

    def reset(self) -> None:
        # Leases taken under the old identity now hold their keys back until they end, as
        # any other relay's would: rows in flight that we lost track of stay in order.
        self.relay_id = _new_relay_id(self.db)

    def delete_published(self, *, now: bool = False) -> None:
        """Nothing to do: each round deletes the rows it confirmed."""


def _new_relay_id(db: Database) -> str:
    """Who holds a lease: this replica, and which start and error of its relay."""
    return f"{db.instance}/{uuid.uuid4().hex[:12]}"


class SqliteClaims(OutboxClaims):
    """SQLite: read on after the last row produced; delete what was published at most once
    per `cleanup_interval_s`."""

    def __init__(self, db: Database, *, cleanup_interval_s: float = 1.0) -> None:
        super().__init__(db)
        self.cleanup_interval_s = cleanup_interval_s
        #: The last seq claimed (produced, or being produced).
        self._claimed_through = 0
        #: The first seq to retry, after a round with failures (None: none).
        self._retry_from: int | None = None
        self._deleted_through = 0
        self._last_cleanup = time.monotonic()

    def claim(self, limit: int) -> list[ClaimedRow]:
        after = max(self._claimed_through, self.published_through)
        with self.db.driver_connection() as connection:
            found = connection.execute(_PENDING_AFTER_SQL, (after, limit)).fetchall()
        rows = [_sqlite_row(*row) for row in found]
        if rows:
            self._claimed_through = rows[-1].seq
        return rows

    def settle(
        self, settler: FailureSettler, rows: Sequence[ClaimedRow], failures: dict[int, Failure]
    ) -> tuple[int, int]:
        retry: set[int] = set()
        if failures:
            with self.db.write_core() as transaction:
                retry = settler.settle_failures(transaction, rows, failures)
                if retry:
                    first = min(retry)
                    self._retry_from = (
                        first if self._retry_from is None else min(first, self._retry_from)
                    )
                if behind := self._behind_retry(rows, failures):
                    transaction.execute(_DELETE_SEQS, {"seqs": behind})
        elif behind := self._behind_retry(rows, failures):
            with self.db.write_core() as transaction:
                transaction.execute(_DELETE_SEQS, {"seqs": behind})
        self._advance(rows)
        return len(rows) - len(retry), len(retry)

    def _behind_retry(self, rows: Sequence[ClaimedRow], failures: dict[int, Failure]) -> list[int]:
        """The rows of this round confirmed behind a row to retry. They are deleted now, so
        the watermark (which stops at that row) never sends them twice or hides newer rows."""
        retry_from = self._retry_from
        if retry_from is None:
            return []
        return [row.seq for row in rows if row.seq > retry_from and row.seq not in failures]

    def renew(self, rows: Sequence[ClaimedRow]) -> None:
        """Nothing to do: one relay per file, whose place is its own."""

    def _advance(self, rows: Sequence[ClaimedRow]) -> None:
        """Move the watermark over this round's rows, up to the first row to retry."""
        for row in rows:
            if self._retry_from is not None and row.seq >= self._retry_from:
                return
            self.published_through = row.seq

    def reset(self) -> None:
        # Read again from the watermark: the rows to retry, and any row of a round whose
        # answers were lost (published again; the consumers drop the copies).
        self._claimed_through = self.published_through
        self._retry_from = None

    def delete_published(self, *, now: bool = False) -> None:
        """Delete the confirmed rows, at most once per cleanup interval unless `now`."""
        if self.published_through <= self._deleted_through:
            return
        if not now and time.monotonic() - self._last_cleanup < self.cleanup_interval_s:
            return
        through = self.published_through
        with self.db.write_core() as session:
            session.execute(delete(OutboxRecord).where(col(OutboxRecord.seq) <= through))
        self._deleted_through = through
        self._last_cleanup = time.monotonic()


def _sqlite_row(
    seq: int,
    event_id: str,
    topic: str,
    key: bytes | None,
    value: bytes | None,
    headers: bytes,
    created_at: str,
    attempts: int,
) -> ClaimedRow:
    """A row as the sqlite3 driver returns it, its time as SQLAlchemy's UTCDateTime reads it."""
    created = from_sqlite_time(created_at)
    return ClaimedRow(seq, event_id, topic, key, value, headers, created, attempts)


def claims_for(
    db: Database, *, cleanup_interval_s: float = 1.0, lease_s: float = 10.0
) -> OutboxClaims:
    """The claim strategy for `db`'s kind of database."""
    if db.is_sqlite:
        return SqliteClaims(db, cleanup_interval_s=cleanup_interval_s)
    return PostgresClaims(db, lease_s=lease_s)
