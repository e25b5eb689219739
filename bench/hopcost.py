"""`python -m bench.hopcost`: CPU per order of each saga step in-process (no Kafka, no gRPC).

`--metrics off` records no Prometheus metric; `--tracing on` records a span per event
(an SDK provider without an exporter: creation and propagation, not the export thread),
each consumed record carrying a `traceparent`. Steady figures on a noisy machine: run
the variants back to back and compare.
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any, cast

from google.protobuf.message import Message
from sqlmodel import col, delete, select

from paysaga.v1 import events_pb2
from services.common.messaging.cloudevents import EventMeta
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.outbox import OutboxRecord, decode_headers
from services.common.messaging.topics import Topic
from services.common.observability import metrics, tracing
from services.common.persistence.db import Database
from services.common.persistence.migrate import migrate
from services.common.timeutil import to_timestamp, utcnow
from services.order.__main__ import MIGRATIONS as ORDER_MIGRATIONS
from services.order.handlers import FinishOrders
from services.order.store import NewOrder, create_orders, seed_catalogue
from services.payment.__main__ import MIGRATIONS as PAYMENT_MIGRATIONS
from services.payment.handlers import ChargeOrders, RecordTransactions
from services.payment.models import Payment
from services.payment.store import seed_accounts
from services.saga.topics import ORDERS, PAYMENTS, SAGA_TOPICS, TRANSACTIONS


class _Record:
    """Just enough of a confluent_kafka.Message for EventConsumer.process_batch."""

    def __init__(self, topic: Topic, event: Message, key: int, offset: int) -> None:
        order_id = getattr(event, "order_id", "")
        meta = EventMeta.new(ce_type=topic.ce_type, source=topic.source, subject=order_id)
        self._topic, self._offset = topic.name, offset
        self._value, self._headers = event.SerializeToString(), meta.headers()
        if tracing.enabled():
            ids = random.Random(offset)
            parent = f"00-{ids.getrandbits(128):032x}-{ids.getrandbits(64):016x}-01"
            self._headers.append(("traceparent", parent.encode()))
        self._key = str(key).encode()

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._offset % 6

    def offset(self) -> int:
        return self._offset

    def headers(self) -> Any:
        return self._headers

    def value(self) -> bytes:
        return self._value

    def key(self) -> bytes:
        return self._key

    def error(self) -> None:
        return None


class _NoKafka:
    def store_offsets(self, **_: Any) -> None:
        pass


def _cpu_ms(label: str, n: int, work: Callable[[], None]) -> None:
    began = time.process_time()
    work()
    print(f"{label:<58} {(time.process_time() - began) / n * 1000:7.3f} ms CPU per order")


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.hopcost", description=__doc__)
    parser.add_argument("--orders", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=500, help="events per transaction")
    parser.add_argument("--logs", action="store_true", help="keep the INFO log lines (to stderr)")
    parser.add_argument("--metrics", choices=("on", "off"), default="on", help="(%(default)s)")
    parser.add_argument("--tracing", choices=("on", "off"), default="off", help="(%(default)s)")
    args = parser.parse_args()
    metrics.set_recording(args.metrics == "on")
    if args.tracing == "on":
        from opentelemetry.sdk.trace import TracerProvider

        tracing.use_tracer(TracerProvider().get_tracer("bench"))
    print(f"metrics {args.metrics}, tracing {args.tracing}")
    if not args.logs:
        logging.disable(logging.INFO)
    home = tempfile.mkdtemp(prefix="paysaga-hopcost-")
    order_url, payment_url = f"sqlite:///{home}/order.db", f"sqlite:///{home}/payment.db"
    migrate(order_url, ORDER_MIGRATIONS)
    migrate(payment_url, PAYMENT_MIGRATIONS)
    odb, pdb = Database(order_url), Database(payment_url)
    seed_catalogue(odb)
    seed_accounts(pdb)
    rng, n, orders = random.Random(6), args.orders, []

    def create() -> None:
        for i in range(n):  # one order per transaction: the worst case of the group commit
            request = NewOrder(rng.randint(1, 5), rng.randint(1, 5), f"r{i}")
            with odb.write_core() as session:
                [order] = create_orders(session, [request], deadline_s=60.0)
            assert isinstance(order, dict)
            orders.append(SimpleNamespace(**order))

    _cpu_ms("CreateOrder transaction (store.create_orders + commit)", n, create)
    payment = EventConsumer(
        pdb,
        cast(Any, _NoKafka()),
        {ORDERS.name: ChargeOrders, PAYMENTS.name: RecordTransactions},
        topics=SAGA_TOPICS,
    )
    order_hop = EventConsumer(
        odb, cast(Any, _NoKafka()), {TRANSACTIONS.name: FinishOrders}, topics=SAGA_TOPICS
    )

    def consume(consumer: EventConsumer, records: list[_Record]) -> Callable[[], None]:
        def work() -> None:
            for k in range(0, len(records), args.batch):
                consumer.process_batch(cast(Any, records[k : k + args.batch]))

        return work

    purchased = [
        _Record(
            ORDERS,
            events_pb2.OrderPurchased(
                order_id=o.id,
                user_id=o.user_id,
                product_id=o.product_id,
                amount_cents=o.price_cents,
                create_time=to_timestamp(utcnow()),
            ),
            o.user_id,
            i,
        )
        for i, o in enumerate(orders)
    ]
    _cpu_ms("payment hop: orders (OrderPurchased)", n, consume(payment, purchased))
    with pdb.read() as session:
        decided = {p.order_id: p for p in session.exec(select(Payment)).all()}
    processed = [
        _Record(
            PAYMENTS,
            events_pb2.PaymentProcessed(
                order_id=o.id,
                user_id=o.user_id,
                amount_cents=o.price_cents,
                status=events_pb2.PAYMENT_STATUS_APPROVED
                if decided[o.id].approved
                else events_pb2.PAYMENT_STATUS_DECLINED,
                reason=decided[o.id].reason,
            ),
            o.user_id,
            i,
        )
        for i, o in enumerate(orders)
    ]
    _cpu_ms("payment hop: payments (PaymentProcessed)", n, consume(payment, processed))
    recorded = [
        _Record(
            TRANSACTIONS,
            events_pb2.TransactionRecorded(
                order_id=o.id,
                user_id=o.user_id,
                amount_cents=o.price_cents,
                status=events_pb2.TRANSACTION_STATUS_SUCCESSFUL
                if decided[o.id].approved
                else events_pb2.TRANSACTION_STATUS_UNSUCCESSFUL,
                reason=decided[o.id].reason,
            ),
            o.user_id,
            i,
        )
        for i, o in enumerate(orders)
    ]
    _cpu_ms("order hop: transactions (TransactionRecorded)", n, consume(order_hop, recorded))
    for name, db in (("order", odb), ("payment", pdb)):
        _cpu_ms(f"{name} relay DB side: read outbox rows + headers + delete", n, _relay(db))


def _relay(db: Database) -> Callable[[], None]:
    """What OutboxRelay.publish_pending does around the producer."""

    def work() -> None:
        while True:
            with db.read() as session:
                rows = session.exec(
                    select(OutboxRecord).order_by(col(OutboxRecord.seq)).limit(1000)
                ).all()
            if not rows:
                return
            for row in rows:
                decode_headers(row.headers)
            with db.write() as session:
                seqs = [row.seq for row in rows]
                session.exec(delete(OutboxRecord).where(col(OutboxRecord.seq).in_(seqs)))

    return work


if __name__ == "__main__":
    main()
