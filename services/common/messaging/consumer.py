"""The consume -> transact -> commit loop every hop runs; services plug in one handler per topic.

For each batch of records:
1. decode each (CloudEvents headers + protobuf); an undecodable one is dead-lettered;
2. in ONE database transaction: drop events whose id is in the inbox (duplicates),
   record the ids of the others, let each topic's handler apply its events (an event the
   handler rejects is dead-lettered), and write the outgoing events and dead letters to
   the outbox;
3. commit the transaction, then store the Kafka offsets (committed about once a second).
If the transaction fails because of an event in it (a poison event: a value a column
cannot hold, an unforeseen constraint, a bug a rare event hits), the batch is narrowed:
its halves are applied in order, each in its own transaction, down to the single event
that still fails, which is dead-lettered alone with the error as its reason. If it fails
because of the database (unreachable, deadlock), nothing is dead-lettered: the consumer
rewinds to the batch's first offsets and tries again. Kafka delivers at least once, the
inbox makes it effectively once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage
from google.protobuf.message import Message
from sqlmodel import Session

from services.common.crashpoints import crash_point
from services.common.headers import Headers, header_text
from services.common.messaging import inbox
from services.common.messaging.cloudevents import EventMeta, InvalidEvent, decode
from services.common.messaging.journal import REDRIVE_HEADER, StepKind, describe
from services.common.messaging.outbox import OutboxWriter
from services.common.messaging.topics import TOPICS
from services.common.observability import metrics, tracing
from services.common.persistence.db import Database, is_transient
from services.common.timeutil import utcnow
from services.common.worker import BackgroundWorker

log = logging.getLogger(__name__)


class FatalConsumerError(RuntimeError):
    """The Kafka consumer client is unusable for good."""


class EventBatch(Protocol):
    """One topic's events of a consumed batch, applied inside the batch's transaction.

    `apply` checks one event and stages its effect; it raises InvalidEvent BEFORE staging
    anything, so a rejected event leaves no trace (it is dead-lettered). `write` writes
    what was staged, once, at the end of the batch.
    """

    def apply(self, event: Message, meta: EventMeta) -> None: ...

    def write(self) -> None: ...


#: Opens a topic's EventBatch from the transaction's session, its outbox and the batch's
#: events (so it can load what they need in one query each).
Handler = Callable[[Session, OutboxWriter, Sequence[Message]], EventBatch]


def _headers(record: KafkaMessage) -> Headers:
    headers = record.headers() or []
    return list(headers.items()) if isinstance(headers, dict) else list(headers)


def _by_topic(records: list[_Record]) -> dict[str, list[_Record]]:
    """Records grouped by topic, each group in consumed order."""
    groups: dict[str, list[_Record]] = {}
    for record in records:
        groups.setdefault(record.topic, []).append(record)
    return groups


def _coordinates(record: KafkaMessage) -> tuple[str, int, int]:
    """A consumed record's (topic, partition, offset)."""
    return record.topic() or "", record.partition() or 0, record.offset() or 0


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _span(records: list[_Record]) -> dict[str, object]:
    """Log fields locating a part of a batch: its one record, or its first and last ones."""
    if len(records) == 1:
        return {"records": 1, **records[0].log_fields()}
    return {"records": len(records), "first": records[0].where, "last": records[-1].where}


@dataclass
class _Record:
    kafka: KafkaMessage
    meta: EventMeta | None = None
    event: Message | None = None
    #: Why the record cannot be decoded ("" if it was).
    error: str = ""
    #: A redriven dead letter's redrive id (services.common.messaging.journal.redrive_id), else "".
    redrive_id: str = ""

    @property
    def topic(self) -> str:
        return self.kafka.topic() or ""

    @property
    def where(self) -> str:
        """The record's coordinates, `topic/partition/offset`."""
        return "/".join(map(str, _coordinates(self.kafka)))

    @property
    def inbox_id(self) -> str:
        """The redrive id of a redriven dead letter (its event id is in the inbox already:
        recorded when it was dead-lettered); else the event id, or the record's coordinates
        when it has no usable id."""
        if self.redrive_id:
            return self.redrive_id
        return self.meta.id if self.meta is not None else self.where

    def log_fields(self) -> dict[str, object]:
        topic, partition, offset = _coordinates(self.kafka)
        return {
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "event_id": self.inbox_id,
            "subject": self.meta.subject if self.meta else "",
        }


@dataclass
class _Outcome:
    """What settling (part of) a batch did: events new to the inbox, and dead letters among them."""

    new: int = 0
    dead_lettered: int = 0

    def __add__(self, other: _Outcome) -> _Outcome:
        return _Outcome(self.new + other.new, self.dead_lettered + other.dead_lettered)


class EventConsumer(BackgroundWorker):
    """Consumes the topics of `handlers` as consumer group `group_id`, one batch per transaction.

    A transaction that fails is tried again up to `attempts` times, `retry_pause_s` apart
    (times the attempt), when the failure is transient or the part is a single record.
    """

    def __init__(
        self,
        db: Database,
        consumer: Consumer,
        handlers: dict[str, Handler],
        *,
        batch_size: int = 500,
        poll_timeout_s: float = 0.2,
        attempts: int = 3,
        retry_pause_s: float = 0.05,
        caught_up: threading.Event | None = None,
        new_consumer: Callable[[], Consumer] | None = None,
    ) -> None:
        super().__init__("event-consumer")
        unknown = set(handlers) - set(TOPICS)
        if unknown:
            raise ValueError(f"no such saga topic(s): {sorted(unknown)}")
        self.db = db
        self.consumer = consumer
        self.handlers = handlers
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.attempts = attempts
        self.retry_pause_s = retry_pause_s
        self.applied = 0
        #: When this consumer last settled a batch (None: not since it started).
        self.last_batch_at: datetime | None = None
        #: The (topic, partition)s this consumer holds, kept by the rebalance callbacks (a
        #: client's assignment() blocks while another thread polls it: read this instead).
        self.assigned: frozenset[tuple[str, int]] = frozenset()
        #: Makes a replacement client after a fatal error (None: the worker dies instead).
        self.new_consumer = new_consumer
        #: Set once a poll found nothing left to read on an assigned partition.
        self.caught_up = caught_up or threading.Event()
        #: When the consumer last applied a batch or found nothing waiting (monotonic).
        self.progress_at = time.monotonic()

    def start(self) -> None:
        """Subscribe, then consume on the thread; stop() finishes the batch in hand first."""
        self._subscribe()
        super().start()

    def _subscribe(self) -> None:
        self.assigned = frozenset()
        self.consumer.subscribe(
            sorted(self.handlers),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Incremental (cooperative-sticky): these partitions are added to those held.
        self.assigned = self.assigned | {(tp.topic, tp.partition) for tp in partitions}

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned = self.assigned - {(tp.topic, tp.partition) for tp in partitions}

    def _run(self) -> None:
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                try:
                    records = [r for r in self._next_batch() if self._usable(r)]
                except FatalConsumerError as exc:
                    self._replace_consumer(exc)
                    continue
                if not records:
                    self.progress_at = time.monotonic()
                    if not self.caught_up.is_set() and self.consumer.assignment():
                        self.caught_up.set()
                    continue
                if self.process_or_rewind(records):
                    self.progress_at = time.monotonic()
                    backoff = 0.1
                    continue
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        finally:
            self.consumer.close()

    def stalled(self, after_s: float) -> str | None:
        """A status check: why the consumer is alive but not progressing, or None.

        Records waiting and no batch applied for `after_s` (failing batches being retried,
        a handler or the database stuck) is a stall; an empty topic is not.
        """
        idle = time.monotonic() - self.progress_at
        if idle > after_s and self.is_alive():
            return f"records are waiting and none was applied for {idle:.0f} s"
        return None

    def _next_batch(self) -> list[KafkaMessage]:
        """Wait for one record, then take what else is already fetched, up to batch_size.

        (consume(n, timeout) alone would wait for a full batch or the whole timeout.)
        """
        first = self.consumer.poll(self.poll_timeout_s)
        if first is None:
            return []
        return [first, *self.consumer.consume(self.batch_size - 1, 0)]

    @staticmethod
    def _usable(record: KafkaMessage) -> bool:
        err = record.error()
        if err is None:
            return True
        if err.code() != KafkaError._PARTITION_EOF:
            log.warning("consumer error", extra={"error": str(err)})
            # confluent-kafka leaves KafkaError.fatal() unset on consumed errors: the code says.
            if err.code() == KafkaError._FATAL or err.fatal():
                raise FatalConsumerError(str(err))
        return False

    def _replace_consumer(self, error: FatalConsumerError) -> None:
        """A fatal error (e.g. this static member fenced by its own earlier session after a
        session timeout): the client is dead for good; a new one rejoins the group. Offsets
        of the batch in hand were not committed, so nothing is skipped."""
        if self.new_consumer is None:
            raise error
        log.error("Kafka consumer failed for good; starting a new one", extra={"error": str(error)})
        try:
            self.consumer.close()
        except Exception:
            log.warning("closing the failed consumer failed", exc_info=True)
        self.consumer = self.new_consumer()
        self._subscribe()

    def process_or_rewind(self, kafka_records: list[KafkaMessage]) -> bool:
        """Process a batch; if that fails, rewind to its first offsets so it comes again.

        True if the batch was processed; on False the caller backs off before the next poll.
        """
        try:
            self.process_batch(kafka_records)
            return True
        except Exception:
            log.exception(
                "batch failed; rewinding to retry it", extra={"records": len(kafka_records)}
            )
            if not self._rewind(kafka_records):
                # The client keeps fetching past the failed records, and the next batch
                # would store offsets beyond them: a new client resumes from the committed
                # offsets instead (what earlier batches stored is committed on close).
                self._replace_consumer(FatalConsumerError("seek back to a failed batch failed"))
            return False

    def process_batch(self, kafka_records: list[KafkaMessage]) -> None:
        """Settle a batch (every record applied or dead-lettered), then store its offsets
        (librdkafka commits them within a second).

        Raises when the database is at fault; parts already committed are in the inbox, so
        the retried batch skips them.
        """
        records = [self._decode(k) for k in kafka_records]
        outcome = self._settle(records)
        crash_point("consumer.after-db-commit")
        self._commit_offsets(kafka_records)
        metrics.consumed(r.topic for r in records)
        self.applied += len(records)
        self.last_batch_at = utcnow()
        # Per batch: DEBUG (the metrics count batches); INFO when something was dead-lettered.
        log.log(
            logging.INFO if outcome.dead_lettered else logging.DEBUG,
            "batch applied",
            extra={
                "records": len(records),
                "new": outcome.new,
                "dead_lettered": outcome.dead_lettered,
            },
        )

    @staticmethod
    def _decode(kafka: KafkaMessage) -> _Record:
        topic = TOPICS[kafka.topic() or ""]
        headers = _headers(kafka)
        redrive = next((header_text(v) for k, v in headers if k == REDRIVE_HEADER), "")
        try:
            meta, event = decode(topic, headers, kafka.value())
        except InvalidEvent as exc:
            return _Record(kafka, error=str(exc), redrive_id=redrive)
        return _Record(kafka, meta=meta, event=event, redrive_id=redrive)

    def _settle(self, records: list[_Record]) -> _Outcome:
        """Apply `records` in one transaction; if one of them makes it fail, narrow it down.

        The halves are settled in order, so no record is applied before an earlier one of
        its partition is settled.
        """
        try:
            return self._transact_with_retries(records)
        except Exception as exc:
            if is_transient(exc) or not self._database_reachable():
                raise
            failure = exc
        if len(records) == 1:
            return self._dead_letter_poison(records[0], failure)
        log.warning(
            "part of a batch failed; narrowing it down",
            extra={**_span(records), "error": _reason(failure)},
        )
        half = len(records) // 2
        return self._settle(records[:half]) + self._settle(records[half:])

    def _transact_with_retries(self, records: list[_Record]) -> _Outcome:
        """`_transact`, tried again on a transient failure (on any failure, for one record)."""
        attempt = 1
        while True:
            try:
                return self._transact(records)
            except Exception as exc:
                if attempt >= self.attempts or not (is_transient(exc) or len(records) == 1):
                    raise
                log.warning(
                    "transaction failed; trying it again",
                    extra={**_span(records), "attempt": attempt, "error": _reason(exc)},
                )
            time.sleep(self.retry_pause_s * attempt)
            attempt += 1

    def _database_reachable(self) -> bool:
        try:
            self.db.ping()
        except Exception:
            log.warning("database unreachable", exc_info=True)
            return False
        return True

    def _transact(self, records: list[_Record]) -> _Outcome:
        # Each event's span ends with the transaction (see services.common.observability.tracing).
        with tracing.EventSpans() as spans, self.db.write() as session:
            outbox = OutboxWriter()
            fresh = self._drop_duplicates(session, records)
            dead = sum(
                self._apply(session, outbox, topic, group, spans)
                for topic, group in _by_topic(fresh).items()
            )
            outbox.write(session)
        return _Outcome(new=len(fresh), dead_lettered=dead)

    @staticmethod
    def _drop_duplicates(session: Session, records: list[_Record]) -> list[_Record]:
        """The records whose event was not seen before (recording them in the inbox)."""
        new = inbox.record_new(session, [(r.inbox_id, r.topic) for r in records])
        fresh = []
        for record in records:
            if record.inbox_id in new:
                new.discard(record.inbox_id)  # a second copy in this batch is a duplicate
                fresh.append(record)
            else:
                log.info("duplicate event skipped", extra=record.log_fields())
                metrics.duplicate_skipped(record.topic)
        return fresh

    def _apply(
        self,
        session: Session,
        outbox: OutboxWriter,
        topic: str,
        records: list[_Record],
        spans: tracing.EventSpans,
    ) -> int:
        """Apply one topic's records; return how many were dead-lettered."""
        batch = self.handlers[topic](session, outbox, [r.event for r in records if r.event])
        dead = 0
        applied: list[str] = []  # their ce_time, for the hop latency
        for record in records:
            subject = record.meta.subject if record.meta else ""
            with spans.handling(record.kafka, record.inbox_id, subject):
                reason = record.error
                if record.event is not None and record.meta is not None and not reason:
                    began = utcnow()
                    try:
                        batch.apply(record.event, record.meta)
                        outbox.journal.consumed(
                            StepKind.APPLIED,
                            topic=topic,
                            partition=record.kafka.partition() or 0,
                            offset=record.kafka.offset() or 0,
                            meta=record.meta,
                            detail=describe(record.event),
                            at=began,
                        )
                        applied.append(record.meta.time)
                        continue
                    except InvalidEvent as exc:
                        reason = str(exc)
                _stage_dead_letter(outbox, record, reason, event_id=record.inbox_id)
                dead += 1
        batch.write()
        metrics.observe_hops(topic, applied)
        return dead

    def _dead_letter_poison(self, record: _Record, exc: Exception) -> _Outcome:
        """Dead-letter the one record that keeps failing, in a transaction of its own."""
        reason = _reason(exc)
        try:
            return self._write_dead_letter(record, record.inbox_id, reason)
        except Exception as dlt_exc:
            if is_transient(dlt_exc) or record.inbox_id == record.where:
                raise
            # The event id itself may be what the database refuses (a NUL byte on
            # PostgreSQL): record the dead letter under the record's coordinates instead.
            log.warning(
                "dead letter under the event id failed; keying it by its coordinates",
                extra={**record.log_fields(), "error": _reason(dlt_exc)},
            )
        return self._write_dead_letter(record, record.where, reason)

    def _write_dead_letter(self, record: _Record, inbox_id: str, reason: str) -> _Outcome:
        with self.db.write() as session:
            if not inbox.record_new(session, [(inbox_id, record.topic)]):
                log.info("duplicate event skipped", extra=record.log_fields())
                return _Outcome()
            outbox = OutboxWriter()
            _stage_dead_letter(outbox, record, reason, event_id=inbox_id)
            outbox.write(session)
        return _Outcome(new=1, dead_lettered=1)

    def _commit_offsets(self, records: list[KafkaMessage]) -> None:
        next_offsets: dict[tuple[str, int], int] = {}
        for topic, partition, offset in map(_coordinates, records):
            next_offsets[(topic, partition)] = offset + 1
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        try:
            # Stored now, committed by librdkafka within auto.commit.interval.ms (see
            # kafka.consumer_config): the transaction is committed, so if the commit is lost
            # (a crash, a rebalance) the batch is redelivered and the inbox drops it.
            self.consumer.store_offsets(offsets=offsets)
        except Exception:
            log.warning("offset store failed; the batch may be redelivered", exc_info=True)

    def _rewind(self, records: list[KafkaMessage]) -> bool:
        """Seek each partition of the batch back to its first record; False if a seek failed."""
        first: dict[tuple[str, int], int] = {}
        for topic, partition, offset in map(_coordinates, records):
            first.setdefault((topic, partition), offset)
        rewound = True
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except Exception:
                log.warning(
                    "seek failed; a new client will resume from the committed offsets",
                    extra={"topic": topic, "partition": partition},
                    exc_info=True,
                )
                rewound = False
        return rewound


def _stage_dead_letter(
    outbox: OutboxWriter, record: _Record, reason: str, *, event_id: str
) -> None:
    """Stage the consumed record, byte for byte, for its topic's dead-letter topic."""
    log.warning("event dead-lettered", extra={**record.log_fields(), "reason": reason})
    tracing.mark_failed(reason)
    topic, partition, offset = _coordinates(record.kafka)
    outbox.add_dead_letter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=record.kafka.key(),
        value=record.kafka.value(),
        headers=_headers(record.kafka),
        reason=reason,
        event_id=event_id,
    )
