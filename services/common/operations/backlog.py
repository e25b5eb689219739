"""What a replica's status reports: outbox backlog, consumer group lag, and what is stalled.

`stall_problems` is the "alive but not progressing" rule: a consumer with records waiting
on its own partitions that has applied no batch for `stalled_after_s`, and a relay whose
oldest unpublished row is older than that. GetStatus reports them in words; the same
function can feed a health check.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec
from sqlalchemy import func, select
from sqlmodel import Session, col

from services.common.messaging.kafka import admin_config
from services.common.messaging.outbox import OutboxRecord, ParkedRecord
from services.common.timeutil import utcnow


@dataclass(frozen=True)
class OutboxBacklog:
    pending: int
    oldest_age_s: float
    parked: int


def outbox_backlog(session: Session, published_through: int = 0) -> OutboxBacklog:
    """Unpublished outbox rows (those after `published_through`: on SQLite the relay deletes
    published rows a moment later), the age of the oldest, and the parked rows."""
    pending, oldest = session.execute(
        select(func.count(), func.min(OutboxRecord.created_at)).where(
            col(OutboxRecord.seq) > published_through
        )
    ).one()
    parked = session.execute(select(func.count()).select_from(ParkedRecord)).scalar_one()
    return OutboxBacklog(pending, _age_s(oldest) if oldest is not None else 0.0, parked)


def _age_s(moment: datetime) -> float:
    if moment.tzinfo is None:  # SQLite returns naive UTC
        moment = moment.replace(tzinfo=UTC)
    return max(0.0, (utcnow() - moment).total_seconds())


@dataclass(frozen=True)
class Lag:
    topic: str
    partition: int
    committed: int
    end: int

    @property
    def behind(self) -> int:
        return max(0, self.end - max(self.committed, 0))


class GroupLag:
    """Reads a consumer group's lag: its committed offsets and the end of each partition.

    The committed offsets come from a consumer of the group that never subscribes (so it
    never joins it): its OffsetFetch goes through the group's coordinator as every
    consumer's does. Not the admin client's ListConsumerGroupOffsets: librdkafka can abort
    the whole process when such an admin request's connection drops, as it does while a
    broker restarts, and a status call must never take a replica down.
    """

    def __init__(self, bootstrap_servers: str, group: str, client_id: str) -> None:
        self.group = group
        self.admin = AdminClient({**admin_config(bootstrap_servers), "log_level": 3})
        self._offsets_config = {
            **admin_config(bootstrap_servers),
            "group.id": group,
            "client.id": client_id,
            "enable.auto.commit": False,
            "log_level": 3,
        }
        self._offsets: Consumer | None = None
        self._lock = threading.Lock()

    def _offsets_reader(self) -> Consumer:
        with self._lock:
            if self._offsets is None:
                self._offsets = Consumer(self._offsets_config)
            return self._offsets

    def lag(self, topics: Sequence[str], timeout_s: float = 3.0) -> list[Lag]:
        """The group's committed offset and the end of every partition of `topics`.

        Raises KafkaException (or a timeout) when the cluster does not answer in time.
        """
        metadata = self.admin.list_topics(timeout=timeout_s)
        partitions = [
            TopicPartition(topic, p)
            for topic in topics
            if topic in metadata.topics
            for p in sorted(metadata.topics[topic].partitions)
        ]
        if not partitions:
            return []
        reader = self._offsets_reader()
        try:
            committed = {
                (tp.topic, tp.partition): max(tp.offset, -1)  # -1001: none yet
                for tp in reader.committed(partitions, timeout=timeout_s)
            }
        finally:
            reader.poll(0)  # serves the client's queued events (connection errors) away

        ends = self.admin.list_offsets(
            {tp: OffsetSpec.latest() for tp in partitions}, request_timeout=timeout_s
        )
        lags = [
            Lag(
                tp.topic,
                tp.partition,
                committed.get((tp.topic, tp.partition), -1),
                f.result().offset,
            )
            for tp, f in ends.items()
        ]
        return sorted(lags, key=lambda lag: (lag.topic, lag.partition))


@dataclass
class Progress:
    """What the stall rule needs to know about one replica."""

    started_at: datetime
    last_batch_at: datetime | None
    #: Records waiting on the partitions this replica consumes (None: unknown).
    waiting_here: int | None
    outbox: OutboxBacklog
    dead_workers: list[str] = field(default_factory=list)


def stall_problems(progress: Progress, *, stalled_after_s: float, now: datetime) -> list[str]:
    """What is alive but not progressing while work is pending, in words."""
    problems = [f"worker {name} is not running" for name in progress.dead_workers]
    since = progress.last_batch_at or progress.started_at
    idle_s = (now - since).total_seconds()
    if progress.waiting_here and idle_s > stalled_after_s:
        last = (
            f"last batch applied {idle_s:.0f} s ago"
            if progress.last_batch_at
            else f"no batch applied since the start {idle_s:.0f} s ago"
        )
        problems.append(
            f"consumer not progressing: {progress.waiting_here} record(s) waiting on its "
            f"partitions, {last}"
        )
    if progress.outbox.pending and progress.outbox.oldest_age_s > stalled_after_s:
        problems.append(
            f"relay not progressing: {progress.outbox.pending} outbox row(s) unpublished, "
            f"the oldest {progress.outbox.oldest_age_s:.0f} s old"
        )
    if progress.outbox.parked:
        problems.append(f"{progress.outbox.parked} outbox row(s) parked (Kafka refused them)")
    return problems
