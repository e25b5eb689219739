"""The outbox relay: publishes committed outbox rows with an idempotent producer, in order.

A row is deleted only after the broker confirmed its delivery (acks=all), so a crash at
any point publishes it again rather than losing it; consumers drop the duplicate by its
event id. The relay sleeps until a commit wrote outbox rows (Database.outbox_signal) or
`idle_poll_s` passes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, Message, Producer
from sqlmodel import col, delete, select

from services.common.db import Database
from services.common.outbox import OutboxRecord

log = logging.getLogger(__name__)

DeliveryCallback = Callable[[KafkaError | None, Message], None]


class OutboxRelay:
    """Publishes a service's outbox; start() runs it on its own thread, stop() drains it."""

    def __init__(
        self,
        db: Database,
        producer: Producer,
        *,
        batch_size: int = 1000,
        idle_poll_s: float = 1.0,
        flush_timeout_s: float = 10.0,
    ) -> None:
        self.db = db
        self.producer = producer
        self.batch_size = batch_size
        self.idle_poll_s = idle_poll_s
        self.flush_timeout_s = flush_timeout_s
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self.published = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        """Publish what is pending (as far as the broker allows), then stop."""
        self._stopping.set()
        self.db.outbox_signal.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        backoff = 0.1
        while True:
            stopping = self._stopping.is_set()
            try:
                while self.publish_pending() == self.batch_size:
                    pass
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
        """Publish one batch of outbox rows; return how many were confirmed and removed."""
        self.db.outbox_signal.clear()
        with self.db.read() as session:
            rows = session.exec(
                select(OutboxRecord).order_by(col(OutboxRecord.seq)).limit(self.batch_size)
            ).all()
        if not rows:
            return 0
        delivered: list[int] = []
        failures: list[str] = []

        def confirm(seq: int) -> DeliveryCallback:
            def on_delivery(err: KafkaError | None, _msg: Message) -> None:
                if err is None:
                    delivered.append(seq)
                else:
                    failures.append(str(err))

            return on_delivery

        for row in rows:
            self._produce(row, confirm(row.seq or 0))
        # Wait for every callback: a record not yet confirmed must not be produced twice
        # by the next round. librdkafka ends each wait by delivery.timeout.ms at the latest.
        while self.producer.flush(self.flush_timeout_s):
            log.warning("waiting for the broker to confirm outbox records")
        if delivered:
            with self.db.write() as session:
                session.exec(delete(OutboxRecord).where(col(OutboxRecord.seq).in_(delivered)))
            self.published += len(delivered)
        if failures:
            log.warning(
                "outbox rows not confirmed; they stay and are sent again",
                extra={"unconfirmed": len(rows) - len(delivered), "error": failures[:1]},
            )
        log.debug("outbox published", extra={"count": len(delivered)})
        return len(delivered)

    def _produce(self, row: OutboxRecord, callback: DeliveryCallback) -> None:
        while True:
            try:
                self.producer.produce(
                    row.topic,
                    key=row.key.encode(),
                    value=row.value,
                    headers=list(row.headers()),
                    on_delivery=callback,
                )
                self.producer.poll(0)
                return
            except BufferError:
                self.producer.poll(0.1)
