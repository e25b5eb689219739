"""The outbox relay: publishes committed outbox rows with an idempotent producer, in order.

Rows are published in `seq` order. A row counts as published only once the broker has
confirmed it (acks=all). On SQLite, where one writer at a time commits and seq never
decreases, rows commit in seq order: the relay keeps its place by seq and deletes the
published rows about once a second, which spares a disk sync per round. On other
databases a row with a lower seq may commit after a higher one, so each round deletes
exactly the rows it published. Either way a crash publishes some rows again (never
loses one) and consumers drop the duplicates by event id. The relay sleeps until a commit
wrote outbox rows (Database.outbox_signal) or `idle_poll_s` passes.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer
from sqlalchemy import delete, select
from sqlmodel import col

from services.common.db import Database
from services.common.outbox import OutboxRecord

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]

#: What the relay reads of an outbox row.
_ROW_COLUMNS = (
    col(OutboxRecord.seq),
    col(OutboxRecord.topic),
    col(OutboxRecord.key),
    col(OutboxRecord.value),
    col(OutboxRecord.headers_json),
)


class OutboxRelay:
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
    ) -> None:
        self.db = db
        self.new_producer = new_producer
        self.producer = new_producer()
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.cleanup_interval_s = cleanup_interval_s
        self.flush_timeout_s = flush_timeout_s
        #: Every row with seq <= this was confirmed by the broker (SQLite only, see above).
        self.published_through = 0
        self.ordered_commits = db.is_sqlite
        self._deleted_through = 0
        self._last_cleanup = time.monotonic()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Publish what is pending (as far as the broker allows), then stop."""
        self._stopping.set()
        self.db.outbox_signal.set()
        self._thread.join(timeout_s)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        backoff = 0.1
        while True:
            stopping = self._stopping.is_set()
            try:
                while self.publish_pending() == self.batch_size:
                    pass
                self.delete_published(now=stopping)
                backoff = 0.1
            except Exception:
                log.exception("outbox relay round failed; retrying", extra={"backoff_s": backoff})
                time.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                if stopping:
                    return
                continue
            if stopping:
                return
            self.db.outbox_signal.wait(self.idle_poll_s)
            self.db.outbox_signal.clear()

    def publish_pending(self) -> int:
        """Publish the next rows; return how many were confirmed (in order, from the first)."""
        self.db.outbox_signal.clear()
        with self.db.read() as session:
            rows = session.execute(
                select(*_ROW_COLUMNS)
                .where(col(OutboxRecord.seq) > self.published_through)
                .order_by(col(OutboxRecord.seq))
                .limit(self.batch_size)
            ).all()
        if not rows:
            return 0
        errors: dict[int, KafkaError] = {}
        for seq, topic, key, value, headers_json in rows:
            headers = [(name, text.encode()) for name, text in json.loads(headers_json)]
            self._produce(topic, key.encode(), value, headers, self._on_delivery(seq, errors))
        # Wait for every confirmation: a row not yet confirmed must not be produced twice by
        # the next round. librdkafka ends each wait by delivery.timeout.ms at the latest.
        while self.producer.flush(self.flush_timeout_s):
            log.warning("waiting for the broker to confirm outbox records")
        if self.ordered_commits:
            confirmed = 0
            for seq, *_ in rows:
                if seq in errors:
                    break
                self.published_through = seq
                confirmed += 1
        else:
            self._delete([seq for seq, *_ in rows if seq not in errors])
            confirmed = len(rows) - len(errors)
        if errors:
            self._after_failures(errors, unconfirmed=len(rows) - confirmed)
        return confirmed

    @staticmethod
    def _on_delivery(seq: int, errors: dict[int, KafkaError]) -> DeliveryCallback:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors[seq] = err

        return on_delivery

    def _after_failures(self, errors: dict[int, KafkaError], *, unconfirmed: int) -> None:
        first = errors[min(errors)]
        log.warning(
            "outbox records not confirmed; they are sent again",
            extra={"unconfirmed": unconfirmed, "error": str(first)},
        )
        if any(err.fatal() for err in errors.values()):
            log.error("fatal producer error; starting a new producer", extra={"error": str(first)})
            self.producer = self.new_producer()

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

    def _delete(self, seqs: list[int]) -> None:
        if seqs:
            with self.db.write() as session:
                session.execute(delete(OutboxRecord).where(col(OutboxRecord.seq).in_(seqs)))

    def _produce(self, topic: str, key: bytes, value: bytes, headers: list[tuple[str, bytes]],
                 callback: DeliveryCallback) -> None:  # fmt: skip
        while True:
            try:
                self.producer.produce(
                    topic, key=key, value=value, headers=list(headers), on_delivery=callback
                )
                self.producer.poll(0)
                return
            except BufferError:
                self.producer.poll(0.1)
