"""Applying a consumed batch: one database transaction, narrowed down to a poison event.

In ONE database transaction: drop events whose id is in the inbox (duplicates), record the
ids of the others, let each topic's handler apply its events (an event the handler
rejects, or one that cannot be decoded, is dead-lettered), and write the outgoing events
and dead letters to the outbox. If the transaction fails because of an event in it (a
poison event: a value a column cannot hold, an unforeseen constraint, a bug a rare event
hits), the batch is narrowed: its halves are applied in order, each in its own
transaction, down to the single event that still fails. That event is tried again in
place, with backoff (services.common.messaging.retries: its trouble may pass), then
dead-lettered alone with the error as its reason; if even its dead letter cannot be
written, a last-resort one is (services.common.messaging.last_resort), which parses
nothing. If the transaction fails because of the database (unreachable, deadlock),
nothing is dead-lettered: it is tried again, then the error goes up, and the consumer
rewinds to the batch.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Message as KafkaMessage
from google.protobuf.message import Message

from services.common.messaging import inbox
from services.common.messaging.cloudevents import EventMeta, InvalidEvent
from services.common.messaging.consumed import (
    ConsumedRecord,
    coordinates,
    decode_record,
    reason,
)
from services.common.messaging.journal import StepKind, storable_text
from services.common.messaging.last_resort import write_last_resort
from services.common.messaging.outbox import OutboxWriter
from services.common.messaging.retries import RetryBudget, RetryPolicy
from services.common.messaging.topics import TopicTable
from services.common.observability import metrics, tracing
from services.common.persistence.db import Database, is_transient
from services.common.persistence.transaction import Transaction
from services.common.timeutil import utcnow

log = logging.getLogger(__name__)


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
Handler = Callable[[Transaction, OutboxWriter, Sequence[Message]], EventBatch]


def _by_topic(records: list[ConsumedRecord]) -> dict[str, list[ConsumedRecord]]:
    """Records grouped by topic, each group in consumed order."""
    groups: dict[str, list[ConsumedRecord]] = {}
    for record in records:
        groups.setdefault(record.topic, []).append(record)
    return groups


def _span(records: list[ConsumedRecord]) -> dict[str, object]:
    """Log fields locating a part of a batch: its one record, or its first and last ones."""
    if len(records) == 1:
        return {"records": 1, **records[0].log_fields()}
    return {"records": len(records), "first": records[0].where, "last": records[-1].where}


@dataclass
class Outcome:
    """What settling (part of) a batch did: events new to the inbox, and dead letters among them."""

    new: int = 0
    dead_lettered: int = 0

    def __add__(self, other: Outcome) -> Outcome:
        return Outcome(self.new + other.new, self.dead_lettered + other.dead_lettered)


class BatchApplier:
    """Applies consumed records to `db` through one handler per topic of `topics`.

    A transaction that fails is tried again as `retry` says when the failure is transient,
    or when the part is a single decoded record (its handler failed).
    """

    def __init__(
        self,
        db: Database,
        handlers: Mapping[str, Handler],
        topics: TopicTable,
        *,
        retry: RetryPolicy | None = None,
    ) -> None:
        unknown = set(handlers) - set(topics.consumed)
        if unknown:
            raise ValueError(f"no such saga topic(s): {sorted(unknown)}")
        self.db = db
        self.handlers = handlers
        self.topics = topics
        self.retry = retry or RetryPolicy()
        self._consumed = topics.consumed

    def decode(self, kafka: KafkaMessage) -> ConsumedRecord:
        """The record's event and metadata, or why it cannot be applied (never raises)."""
        return decode_record(self._consumed[kafka.topic() or ""], kafka)

    def settle(self, records: list[ConsumedRecord], budget: RetryBudget | None = None) -> Outcome:
        """Apply `records` in one transaction; if one of them makes it fail, narrow it down.

        The halves are settled in order, so no record is applied before an earlier one of
        its partition is settled; they share the batch's retry `budget`. Raises when the
        database is at fault; parts already committed are in the inbox, so the retried
        batch skips them.
        """
        budget = budget or self.retry.budget()
        try:
            return self._transact_with_retries(records, budget)
        except Exception as exc:
            if is_transient(exc) or not self._database_reachable():
                raise
            failure = exc
        if len(records) == 1:
            return self._dead_letter_poison(records[0], failure)
        log.warning(
            "part of a batch failed; narrowing it down",
            extra={**_span(records), "error": reason(failure)},
        )
        half = len(records) // 2
        return self.settle(records[:half], budget) + self.settle(records[half:], budget)

    def _transact_with_retries(self, records: list[ConsumedRecord], budget: RetryBudget) -> Outcome:
        """`_transact`, tried again on a transient failure, and on any failure of a single
        decoded record (its handler's: a rejected or undecodable one is never retried)."""
        retry = 0
        while True:
            try:
                return self._transact(records)
            except Exception as exc:
                handler_failed = len(records) == 1 and not records[0].error
                retry += 1
                wait = budget.wait_before(retry) if is_transient(exc) or handler_failed else None
                if wait is None:
                    raise
                log.warning(
                    "transaction failed; trying it again",
                    extra={**_span(records), "retry": retry, "error": reason(exc)},
                )
            budget.pause(wait)

    def _database_reachable(self) -> bool:
        try:
            self.db.ping()
        except Exception:
            log.warning("database unreachable", exc_info=True)
            return False
        return True

    def _transact(self, records: list[ConsumedRecord]) -> Outcome:
        # Each event's span ends with the transaction (see services.common.observability.tracing).
        with tracing.EventSpans() as spans, self.db.write_core() as session:
            outbox = OutboxWriter(self.topics)
            fresh = self._drop_duplicates(session, records)
            dead = sum(
                self._apply(session, outbox, topic, group, spans)
                for topic, group in _by_topic(fresh).items()
            )
            outbox.write(session)
        return Outcome(new=len(fresh), dead_lettered=dead)

    @staticmethod
    def _drop_duplicates(
        session: Transaction, records: list[ConsumedRecord]
    ) -> list[ConsumedRecord]:
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
        session: Transaction,
        outbox: OutboxWriter,
        topic: str,
        records: list[ConsumedRecord],
        spans: tracing.EventSpans,
    ) -> int:
        """Apply one topic's records; return how many were dead-lettered."""
        batch = self.handlers[topic](session, outbox, [r.event for r in records if r.event])
        dead = 0
        applied: list[str] = []  # their ce_time, for the hop latency
        for record in records:
            subject = record.meta.subject if record.meta else ""
            with spans.handling(record.traced, record.inbox_id, subject):
                why = record.error
                if record.event is not None and record.meta is not None and not why:
                    began = utcnow()
                    try:
                        batch.apply(record.event, record.meta)
                        outbox.journal.consumed(
                            StepKind.APPLIED,
                            topic=topic,
                            partition=record.kafka.partition() or 0,
                            offset=record.kafka.offset() or 0,
                            meta=record.meta,
                            detail=self.topics.describe(record.event),
                            at=began,
                        )
                        applied.append(record.meta.time)
                        continue
                    except InvalidEvent as exc:
                        why = str(exc)
                _stage_dead_letter(outbox, record, why, event_id=record.inbox_id)
                dead += 1
        batch.write()
        metrics.observe_hops(topic, applied)
        return dead

    def _dead_letter_poison(self, record: ConsumedRecord, exc: Exception) -> Outcome:
        """Dead-letter the one record that keeps failing, in a transaction of its own; if
        that fails too, in a last-resort one that parses nothing."""
        why = reason(exc)
        try:
            return self._write_dead_letter(record, why)
        except Exception as dead_letter_exc:
            if is_transient(dead_letter_exc) or not self._database_reachable():
                raise
            why = f"{why}; its dead letter failed: {reason(dead_letter_exc)}"
        log.warning("dead letter failed; writing a last-resort one", extra=record.log_fields())
        topic, partition, offset = coordinates(record.kafka)
        written = write_last_resort(
            self.db,
            topic=topic,
            partition=partition,
            offset=offset,
            key=record.kafka.key(),
            value=record.kafka.value(),
            headers=record.headers,
            reason=why,
            inbox_id=record.where,
        )
        return Outcome(new=1, dead_lettered=1) if written else Outcome()

    def _write_dead_letter(self, record: ConsumedRecord, why: str) -> Outcome:
        with self.db.write_core() as session:
            if not inbox.record_new(session, [(record.inbox_id, record.topic)]):
                log.info("duplicate event skipped", extra=record.log_fields())
                return Outcome()
            outbox = OutboxWriter(self.topics)
            _stage_dead_letter(outbox, record, why, event_id=record.inbox_id)
            outbox.write(session)
        return Outcome(new=1, dead_lettered=1)


def _stage_dead_letter(
    outbox: OutboxWriter, record: ConsumedRecord, why: str, *, event_id: str
) -> None:
    """Stage the consumed record, byte for byte, for its topic's dead-letter topic."""
    why = storable_text(why)
    log.warning("event dead-lettered", extra={**record.log_fields(), "reason": why})
    tracing.mark_failed(why)
    topic, partition, offset = coordinates(record.kafka)
    outbox.add_dead_letter(
        topic=topic,
        partition=partition,
        offset=offset,
        key=record.kafka.key(),
        value=record.kafka.value(),
        headers=record.headers,
        reason=why,
        event_id=event_id,
    )
