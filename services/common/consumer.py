"""The consume -> transact -> commit loop every hop runs; services plug in one handler per topic.

For each batch of records:
1. decode each (CloudEvents headers + protobuf); an undecodable one is dead-lettered;
2. in ONE database transaction: drop events whose id is in the inbox (duplicates),
   record the ids of the others, let each topic's handler apply its events (an event the
   handler rejects is dead-lettered), and write the outgoing events and dead letters to
   the outbox;
3. commit the transaction, then commit the Kafka offsets.
If the transaction fails, nothing of the batch is applied and the consumer rewinds to
the batch's first offsets and tries again: Kafka delivers at least once, the inbox
makes it effectively once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage
from google.protobuf.message import Message
from sqlmodel import Session

from services.common import inbox
from services.common.cloudevents import EventMeta, Headers, InvalidEvent, decode
from services.common.db import Database
from services.common.outbox import OutboxWriter
from services.common.topics import TOPICS

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


@dataclass
class _Record:
    kafka: KafkaMessage
    meta: EventMeta | None = None
    event: Message | None = None
    error: str = ""

    @property
    def topic(self) -> str:
        return self.kafka.topic() or ""

    def log_fields(self) -> dict[str, object]:
        k = self.kafka
        return {
            "topic": k.topic(),
            "partition": k.partition(),
            "offset": k.offset(),
            "event_id": self.inbox_id,
            "subject": self.meta.subject if self.meta else "",
        }

    @property
    def inbox_id(self) -> str:
        """The event id, or the record's coordinates when it has no usable id."""
        if self.meta is not None:
            return self.meta.id
        k = self.kafka
        return f"{k.topic()}/{k.partition()}/{k.offset()}"


class EventConsumer:
    """Consumes the topics of `handlers` as consumer group `group_id`, one batch per transaction."""

    def __init__(
        self,
        db: Database,
        consumer: Consumer,
        handlers: dict[str, Handler],
        *,
        batch_size: int = 500,
        poll_timeout_s: float = 0.2,
    ) -> None:
        unknown = set(handlers) - set(TOPICS)
        if unknown:
            raise ValueError(f"no such saga topic(s): {sorted(unknown)}")
        self.db = db
        self.consumer = consumer
        self.handlers = handlers
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.applied = 0
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-consumer", daemon=True)

    def start(self) -> None:
        self.consumer.subscribe(sorted(self.handlers))
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Finish the batch in hand, commit it, leave the group."""
        self._stopping.set()
        self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                records = [r for r in self._next_batch() if self._usable(r)]
                if not records:
                    continue
                try:
                    self.process_batch(records)
                    backoff = 0.1
                except Exception:
                    log.exception(
                        "batch failed; rewinding to retry it",
                        extra={"records": len(records), "backoff_s": backoff},
                    )
                    self._rewind(records)
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
        finally:
            self.consumer.close()

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
            if err.fatal():
                raise RuntimeError(f"fatal Kafka consumer error: {err}")
        return False

    def process_batch(self, kafka_records: list[KafkaMessage]) -> None:
        """Apply a batch in one transaction, then commit its offsets."""
        records = [self._decode(k) for k in kafka_records]
        with self.db.write() as session:
            outbox = OutboxWriter()
            fresh = self._drop_duplicates(session, records)
            for topic, group in _by_topic(fresh).items():
                self._apply(session, outbox, topic, group)
            outbox.write(session)
        self._commit_offsets(kafka_records)
        self.applied += len(records)
        log.info(
            "batch applied",
            extra={
                "records": len(records),
                "new": len(fresh),
                "dead_lettered": sum(bool(r.error) for r in fresh),
            },
        )

    @staticmethod
    def _decode(kafka: KafkaMessage) -> _Record:
        topic = TOPICS[kafka.topic() or ""]
        try:
            meta, event = decode(topic, _headers(kafka), kafka.value())
        except InvalidEvent as exc:
            return _Record(kafka, error=str(exc))
        return _Record(kafka, meta=meta, event=event)

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
        return fresh

    def _apply(
        self, session: Session, outbox: OutboxWriter, topic: str, records: list[_Record]
    ) -> None:
        batch = self.handlers[topic](session, outbox, [r.event for r in records if r.event])
        for record in records:
            if record.event is not None and record.meta is not None and not record.error:
                try:
                    batch.apply(record.event, record.meta)
                    continue
                except InvalidEvent as exc:
                    record.error = str(exc)
            log.warning(
                "event dead-lettered", extra={**record.log_fields(), "reason": record.error}
            )
            k = record.kafka
            outbox.add_dead_letter(
                topic=topic,
                key=k.key(),
                value=k.value(),
                headers=_headers(k),
                reason=record.error,
                event_id=record.inbox_id,
            )
        batch.write()

    def _commit_offsets(self, records: list[KafkaMessage]) -> None:
        next_offsets: dict[tuple[str, int], int] = {}
        for topic, partition, offset in map(_coordinates, records):
            next_offsets[(topic, partition)] = offset + 1
        offsets = [TopicPartition(t, p, o) for (t, p), o in next_offsets.items()]
        try:
            # Asynchronous: the transaction is committed, so if this commit is lost (a crash,
            # a rebalance) the batch is redelivered and the inbox drops it.
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except Exception:
            log.warning("offset commit failed; the batch may be redelivered", exc_info=True)

    def _rewind(self, records: list[KafkaMessage]) -> None:
        first: dict[tuple[str, int], int] = {}
        for topic, partition, offset in map(_coordinates, records):
            first.setdefault((topic, partition), offset)
        for (topic, partition), offset in first.items():
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except Exception:
                log.warning(
                    "seek failed; partition will resume from its committed offset",
                    extra={"topic": topic, "partition": partition},
                    exc_info=True,
                )
