"""The Kafka ceiling: a bare 3-hop pipeline like the saga's, with no database and no gRPC.

source -> <run>.orders -> hop -> <run>.payments -> hop -> <run>.transactions -> sink, each
stage its own process. Records are the saga's own: the same protobuf events (~80 bytes),
CloudEvents headers and user-id keys, produced with the services' idempotent producer
settings. A hop consumes a batch, decodes it, produces the next events, waits for their
acks and then commits its offsets synchronously: at-least-once, as each saga hop is.
"""

from __future__ import annotations

import multiprocessing as mp
import queue
import random
import time
import uuid
from multiprocessing.synchronize import Event
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from bench.procstat import CpuMeter
from paysaga.v1 import events_pb2
from services.common.messaging.cloudevents import EventMeta, decode
from services.common.messaging.kafka import consumer_config, producer_config
from services.common.messaging.topics import Topic
from services.saga.topics import ORDERS, PAYMENTS, TRANSACTIONS

STAGES = ("orders", "payments", "transactions")
BATCH = 500


def _event_for(stage: str, order_id: str, user_id: int) -> Any:
    if stage == "orders":
        return events_pb2.OrderPurchased(
            order_id=order_id, user_id=user_id, product_id=2, amount_cents=7500
        )
    if stage == "payments":
        return events_pb2.PaymentProcessed(
            order_id=order_id,
            user_id=user_id,
            amount_cents=7500,
            status=events_pb2.PAYMENT_STATUS_APPROVED,
        )
    return events_pb2.TransactionRecorded(
        order_id=order_id,
        user_id=user_id,
        amount_cents=7500,
        status=events_pb2.TRANSACTION_STATUS_SUCCESSFUL,
        transaction_id=str(uuid.uuid4()),
    )


_SAGA_TOPIC: dict[str, Topic] = {t.name: t for t in (ORDERS, PAYMENTS, TRANSACTIONS)}


def _produce(producer: Producer, topic: str, stage: str, order_id: str, user_id: int) -> None:
    event = _event_for(stage, order_id, user_id)
    meta = EventMeta.new(
        ce_type=_SAGA_TOPIC[stage].ce_type, source=_SAGA_TOPIC[stage].source, subject=order_id
    )
    while True:
        try:
            producer.produce(
                topic,
                key=str(user_id).encode(),
                value=event.SerializeToString(),
                headers=list(meta.headers()),
            )
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.05)


def _consumer(bootstrap: str, group: str, topic: str) -> Consumer:
    consumer = Consumer(consumer_config(bootstrap, group, group))
    consumer.subscribe([topic])
    deadline = time.monotonic() + 30
    while not consumer.assignment() and time.monotonic() < deadline:
        consumer.poll(0.1)  # nothing is produced before every stage is ready
    return consumer


def _records(consumer: Consumer) -> list[Any]:
    """Wait up to 100 ms for one record, then take what is already fetched, up to BATCH.

    (consume(BATCH, timeout) would wait the whole timeout for a full batch at low rates.)
    """
    batch = consumer.consume(1, 0.1)
    if batch:
        batch += consumer.consume(BATCH - 1, 0)
    return [r for r in batch if r.error() is None]  # drops partition EOF and transient errors


def _store_offsets(consumer: Consumer, records: list[Any]) -> None:
    """Store the batch's offsets, as the services do: librdkafka commits them once a second."""
    offsets: dict[tuple[str, int], int] = {}
    for r in records:
        offsets[(r.topic(), r.partition())] = r.offset() + 1
    consumer.store_offsets(offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()])


def hop(bootstrap: str, run: str, stage: int, ready: Event, stop: Event) -> None:
    """Consume `STAGES[stage]`, produce the next stage's event for each record."""
    source, target = STAGES[stage], STAGES[stage + 1]
    consumer = _consumer(bootstrap, f"{run}-hop{stage}", f"{run}.{source}")
    producer = Producer(producer_config(bootstrap, f"{run}-hop{stage}"))
    ready.set()
    while not stop.is_set():
        records = _records(consumer)
        if not records:
            continue
        for r in records:
            _meta, event = decode(_SAGA_TOPIC[source], r.headers(), r.value())
            _produce(producer, f"{run}.{target}", target, event.order_id, event.user_id)
        producer.flush(30)
        _store_offsets(consumer, records)
    consumer.close()


def sink(bootstrap: str, run: str, count: int, ready: Event, out: mp.Queue[Any]) -> None:
    """Consume the last topic until `count` records arrived; report when the last came."""
    consumer = _consumer(bootstrap, f"{run}-sink", f"{run}.{STAGES[-1]}")
    ready.set()
    seen, deadline = 0, time.monotonic() + 300
    while seen < count and time.monotonic() < deadline:
        records = _records(consumer)
        for r in records:
            decode(TRANSACTIONS, r.headers(), r.value())
        seen += len(records)
        if records:
            _store_offsets(consumer, records)
    out.put({"received": seen, "last_at": time.time()})
    consumer.close()


def source(bootstrap: str, run: str, count: int, out: mp.Queue[Any]) -> None:
    """Produce `count` OrderPurchased events as fast as the producer takes them."""
    producer = Producer(producer_config(bootstrap, f"{run}-source"))
    rng = random.Random(6)
    first = time.time()
    for _ in range(count):
        _produce(producer, f"{run}.orders", "orders", str(uuid.uuid4()), rng.randint(1, 5))
    producer.flush(60)
    out.put({"first_at": first, "produced_s": time.time() - first})


def _create_topics(bootstrap: str, run: str, partitions: int) -> list[str]:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    names = [f"{run}.{s}" for s in STAGES]
    for future in admin.create_topics(
        [NewTopic(n, partitions, 1) for n in names], operation_timeout=30
    ).values():
        future.result()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        topics = admin.list_topics(timeout=5).topics
        if all(
            n in topics and all(p.leader >= 0 for p in topics[n].partitions.values()) for n in names
        ):
            break
        time.sleep(0.1)
    return names


def kafka_ceiling(
    bootstrap: str, *, count: int, pids: dict[str, int], partitions: int = 6
) -> dict[str, Any]:
    """Push `count` events through the 3 hops; msgs/s from first produce to last consume.

    `pids` (the broker's, if known) are CPU-accounted while the events flow."""
    run = f"bench-{uuid.uuid4().hex[:8]}"
    names = _create_topics(bootstrap, run, partitions)
    print(f"[kafka] topics {', '.join(names)} ({partitions} partitions)", flush=True)
    ctx = mp.get_context("spawn")
    stop = ctx.Event()
    results: mp.Queue[Any] = ctx.Queue()
    readies = [ctx.Event() for _ in range(3)]
    stages = [ctx.Process(target=hop, args=(bootstrap, run, i, readies[i], stop)) for i in (0, 1)]
    stages.append(ctx.Process(target=sink, args=(bootstrap, run, count, readies[2], results)))
    try:
        for p in stages:
            p.start()
        for r in readies:
            if not r.wait(60):
                raise RuntimeError("a Kafka pipeline stage did not join its group in 60 s")
        print(f"[kafka] stages ready; producing {count} events", flush=True)
        producer = ctx.Process(target=source, args=(bootstrap, run, count, results))
        cpu = CpuMeter(pids)
        cpu.start()
        producer.start()
        stages.append(producer)
        got: dict[str, Any] = {}
        while "last_at" not in got or "first_at" not in got:
            try:
                got.update(results.get(timeout=330))
            except queue.Empty as exc:
                raise RuntimeError("the Kafka pipeline did not finish") from exc
        used = cpu.stop()
    finally:
        stop.set()
        for p in stages:
            p.join(15)
            if p.is_alive():
                p.terminate()
                p.join()
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.delete_topics(names, operation_timeout=30).values():
            try:
                future.result()
            except Exception:
                pass
    seconds = got["last_at"] - got["first_at"]
    rate = got["received"] / seconds if seconds > 0 else 0.0
    print(f"[kafka] {got['received']} events through 3 hops in {seconds:.1f}s: {rate:.0f}/s")
    return {
        "msgs_per_s": round(rate, 1),
        "events": count,
        "received": got["received"],
        "seconds": round(seconds, 2),
        "source_produce_s": round(got["produced_s"], 2),
        "partitions": partitions,
        "hops": "source -> hop -> hop -> sink, 4 processes",
        "cpu_s": used,
    }
