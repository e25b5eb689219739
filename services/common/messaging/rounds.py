"""A relay round in flight, the thread that hears the broker's answers for all of them, and
when to look again at rows another relay holds back.

A `Round` is the outbox rows one claim took, produced together; each delivery report
(one per row) is counted, failures kept by seq, and the round calls `on_answered` once the
broker has answered for every row. The `DeliveryPump` serves the producer's delivery
reports on a thread of its own while records are outstanding, so the relay can claim and
produce the next round while earlier ones wait for their acknowledgements (acks=all). It
waits with `flush`, during which librdkafka sends what is queued at once instead of
lingering: a round goes out as soon as it is produced, as it did when each round flushed.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence

from confluent_kafka import KafkaError, Message, Producer

from services.common.messaging.delivery import DeliveryCallback, Failure
from services.common.messaging.outbox import ClaimedRow
from services.common.worker import BackgroundWorker

log = logging.getLogger(__name__)


class Round:
    """Rows produced together; `answered` once the broker answered for each of them."""

    def __init__(self, rows: Sequence[ClaimedRow], on_answered: Callable[[], None]) -> None:
        self.rows = rows
        #: Why rows were not published, by seq (filled in as the answers come).
        self.failures: dict[int, Failure] = {}
        #: When it was produced, and its leases last renewed (monotonic).
        self.started = self.renewed = time.monotonic()
        self.started_ns = time.time_ns()
        self._on_answered = on_answered
        # One entry per answer: list.append is atomic, and answers may come on two threads
        # (the pump's, and a caller's own flush).
        self._answers: list[None] = []

    @property
    def answered(self) -> bool:
        return len(self._answers) >= len(self.rows)

    def on_delivery(self, seq: int) -> DeliveryCallback:
        """The delivery callback of row `seq`."""

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                self.failures[seq] = Failure.of_kafka(err)
            self._answer()

        return delivered

    def not_produced(self, seq: int, exc: Exception) -> None:
        """produce() raised for row `seq`: that is its answer."""
        self.failures[seq] = Failure.of_exception(exc)
        self._answer()

    def _answer(self) -> None:
        self._answers.append(None)
        if len(self._answers) == len(self.rows):
            self._on_answered()


class DeliveryPump(BackgroundWorker):
    """Serves the delivery reports of `producer()` (read anew each turn: the relay may
    replace it) while it has records outstanding; `produced()` says there are new ones."""

    def __init__(self, producer: Callable[[], Producer], wait_s: float = 0.1) -> None:
        super().__init__("outbox-relay-deliveries")
        self.producer = producer
        self.wait_s = wait_s
        self._produced = threading.Event()

    def produced(self) -> None:
        self._produced.set()

    def _wake(self) -> None:
        self._produced.set()

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                producer = self.producer()
                if len(producer):
                    producer.flush(self.wait_s)
                    continue
            except Exception:  # never fatal: the relay's rounds would wait forever
                log.exception("serving delivery reports failed; trying again")
                self._stopping.wait(self.wait_s)
                continue
            self._produced.wait(self.wait_s * 5)
            self._produced.clear()


class Recheck:
    """When to look again at rows a claim held back (another relay has their key in flight).

    That relay claims them itself once it settles, unless a claim of this relay had them
    locked at that very moment; so this one looks again after 5 ms, then twice as long each
    time they are still held back (a relay that died holds them until its lease ends), up
    to the idle poll.
    """

    FIRST_S = 0.005

    def __init__(self, longest_s: float) -> None:
        self.longest_s = longest_s
        self._wait_s = 0.0
        self._at: float | None = None

    def after_claim(self, held_back: bool) -> None:
        if not held_back:
            self._wait_s, self._at = 0.0, None
            return
        self._wait_s = min(self._wait_s * 2, self.longest_s) if self._wait_s else self.FIRST_S
        self._at = time.monotonic() + self._wait_s

    def due(self) -> bool:
        if self._at is None or time.monotonic() < self._at:
            return False
        self._at = None
        return True

    def wait_s(self) -> float | None:
        return None if self._at is None else max(0.0, self._at - time.monotonic())
