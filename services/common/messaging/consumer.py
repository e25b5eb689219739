"""The consume -> transact -> commit loop every hop runs; services plug in one handler per topic.

This module keeps the Kafka client: it subscribes, polls a batch, has it applied
(services.common.messaging.apply: one transaction, narrowed down to a poison event), then
stores the batch's offsets (librdkafka commits them about once a second). If applying
fails because of the database, nothing is dead-lettered and the offsets are not stored:
the consumer seeks back to the batch's first offsets and tries again. A client that fails
for good (or cannot seek back) is closed and replaced. Kafka delivers at least once, the
inbox makes it effectively once.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable
from datetime import datetime

from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka import Message as KafkaMessage

from services.common.crashpoints import crash_point
from services.common.messaging.apply import BatchApplier, Handler
from services.common.messaging.catchup import AppliedPositions, CaughtUpPartitions, PositionsRequest
from services.common.messaging.consumed import coordinates
from services.common.messaging.retries import RetryPolicy
from services.common.messaging.topics import TopicTable
from services.common.observability import metrics
from services.common.persistence.db import Database
from services.common.timeutil import utcnow
from services.common.worker import BackgroundWorker

log = logging.getLogger(__name__)

#: How long the high watermarks may stay unreadable before it is said at WARNING: until
#: they are read, no partition counts as caught up, so this replica fails no saga deadline.
WATERMARKS_WARN_AFTER_S = 60.0


class FatalConsumerError(RuntimeError):
    """The Kafka consumer client is unusable for good."""


class EventConsumer(BackgroundWorker):
    """Consumes the topics of `handlers` as consumer group `group_id`, one batch per transaction.

    `topics` is the table the handlers' topics are in: how their records decode, where
    the events the handlers stage go. `retry`: how a failed transaction is tried again
    before its record is dead-lettered or the batch rewound (see BatchApplier).
    `high_watermarks` reads a topic's high watermarks now (kafka.HighWatermarks), for
    `caught_up_partitions`.
    """

    def __init__(
        self,
        db: Database,
        consumer: Consumer,
        handlers: dict[str, Handler],
        *,
        topics: TopicTable,
        batch_size: int = 500,
        poll_timeout_s: float = 0.2,
        retry: RetryPolicy | None = None,
        high_watermarks: Callable[[str], dict[int, int]] | None = None,
        new_consumer: Callable[[], Consumer] | None = None,
    ) -> None:
        super().__init__("event-consumer")
        self.applier = BatchApplier(db, handlers, topics, retry=retry)
        self.consumer = consumer
        self.handlers = handlers
        self.batch_size = batch_size
        self.poll_timeout_s = poll_timeout_s
        self.applied = 0
        #: When this consumer last settled a batch (None: not since it started).
        self.last_batch_at: datetime | None = None
        #: The (topic, partition)s this consumer holds, kept by the rebalance callbacks (a
        #: client's assignment() blocks while another thread polls it: read this instead).
        self.assigned: frozenset[tuple[str, int]] = frozenset()
        #: Makes a replacement client after a fatal error (None: the worker dies instead).
        self.new_consumer = new_consumer
        self.high_watermarks = high_watermarks
        #: Since when reading the high watermarks fails (monotonic; None: it works).
        self._watermarks_failing_since: float | None = None
        self._watermarks_warned = False
        #: Where this consumer stands on the partitions it holds (kept on its thread).
        self.positions = AppliedPositions()
        #: Questions about those positions, answered on the consumer's thread between batches.
        self._position_requests: queue.SimpleQueue[PositionsRequest] = queue.SimpleQueue()
        #: When the consumer last applied a batch or found nothing waiting (monotonic).
        self.progress_at = time.monotonic()

    def start(self) -> None:
        """Subscribe, then consume on the thread; stop() finishes the batch in hand first."""
        self._subscribe()
        super().start()

    def _subscribe(self) -> None:
        self.assigned = frozenset()
        self.positions.forget()
        self.consumer.subscribe(
            sorted(self.handlers),
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Incremental (cooperative-sticky): these partitions are added to those held.
        added = {(tp.topic, tp.partition) for tp in partitions}
        self.positions.forget(added)
        self.assigned = self.assigned | added

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        self.positions.forget(revoked)
        self.assigned = self.assigned - revoked

    def _run(self) -> None:
        backoff = 0.1
        try:
            while not self._stopping.is_set():
                if not self._position_requests.empty():
                    self._answer_position_requests()
                try:
                    records = [r for r in self._next_batch() if self._usable(r)]
                except FatalConsumerError as exc:
                    self._replace_consumer(exc)
                    continue
                if not records:
                    self.progress_at = time.monotonic()
                    continue
                if self.process_or_rewind(records):
                    self.progress_at = time.monotonic()
                    backoff = 0.1
                    continue
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
        finally:
            self.consumer.close()

    def caught_up_partitions(
        self, topic: str, timeout_s: float = 10.0
    ) -> CaughtUpPartitions | None:
        """The partitions of `topic` this consumer holds and has applied every record of
        that was on them when this was called; None if that cannot be told now (no
        watermark reader, no broker answers, the consumer did not answer in `timeout_s`).

        Asked afresh on every call (a rebalance, an outage or a lag shows at once): the
        high watermarks are read now, then the consumer's thread says, between two
        batches, up to where it has applied each partition it holds.
        """
        if self.high_watermarks is None or not self.is_alive():
            return None
        as_of = utcnow()
        try:
            high = self.high_watermarks(topic)
        except Exception as exc:
            self._watermarks_unknown(exc)
            return None
        if self._watermarks_warned:
            log.warning("high watermarks read again: saga deadlines are swept again")
        self._watermarks_failing_since, self._watermarks_warned = None, False
        request = PositionsRequest(topic)
        self._position_requests.put(request)
        positions = request.wait(timeout_s)
        if positions is None:
            return None
        caught_up = {p for p, at in positions.items() if p in high and at >= high[p]}
        return CaughtUpPartitions(topic, len(high), frozenset(caught_up), as_of)

    def _watermarks_unknown(self, exc: Exception) -> None:
        """Say that nothing counts as caught up: at INFO, then once at WARNING when it has
        lasted WATERMARKS_WARN_AFTER_S (deadlines wait meanwhile: an operator should know)."""
        now = time.monotonic()
        if self._watermarks_failing_since is None:
            self._watermarks_failing_since = now
        failing_s = now - self._watermarks_failing_since
        if failing_s >= WATERMARKS_WARN_AFTER_S and not self._watermarks_warned:
            self._watermarks_warned = True
            log.warning(
                "high watermarks unknown for %.0f s: this replica fails no saga deadline "
                "until it can read them",
                failing_s,
                extra={"error": str(exc)},
            )
        else:
            log.info(
                "high watermarks unknown; nothing counts as caught up", extra={"error": str(exc)}
            )

    def _answer_position_requests(self) -> None:
        while not self._position_requests.empty():
            request = self._position_requests.get_nowait()
            held = sorted(k for k in self.assigned if k[0] == request.topic)
            try:
                request.answer(self.positions.of(self.consumer, held))
            except Exception as exc:
                log.info("positions unknown", extra={"topic": request.topic, "error": str(exc)})
                request.answer(None)

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
        records = [self.applier.decode(k) for k in kafka_records]
        outcome = self.applier.settle(records)
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

    def _commit_offsets(self, records: list[KafkaMessage]) -> None:
        next_offsets: dict[tuple[str, int], int] = {}
        for topic, partition, offset in map(coordinates, records):
            next_offsets[(topic, partition)] = offset + 1
        self.positions.applied(next_offsets)
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
        for topic, partition, offset in map(coordinates, records):
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
