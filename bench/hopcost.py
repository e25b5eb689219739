"""`python -m bench.hopcost`: CPU per order of each saga step in-process (no Kafka, no gRPC)."""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import time
from collections.abc import Callable
from typing import Any, cast

from google.protobuf.message import Message
from sqlmodel import col, delete, select

from paysaga.v1 import events_pb2
from services.common.cloudevents import EventMeta
from services.common.consumer import EventConsumer
from services.common.db import Database
from services.common.inbox import ProcessedEvent
from services.common.outbox import OutboxRecord
from services.common.topics import ORDERS, PAYMENTS, TRANSACTIONS, Topic
from services.order.handlers import transaction_recorded_handler
from services.order.models import Order, Product
from services.order.server import OrderServicer
from services.order.store import create_order, seed_catalogue
from services.order.watch import OrderChanges
from services.payment.handlers import on_order_purchased, on_payment_processed
from services.payment.models import Account, Payment, Transaction
from services.payment.store import seed_accounts


class _Record:
    """Just enough of a confluent_kafka.Message for EventConsumer.process_batch."""

    def __init__(self, topic: Topic, event: Message, key: int, offset: int) -> None:
        meta = EventMeta.new(ce_type=topic.ce_type, source="bench", subject=str(key))
        self._topic, self._offset = topic.name, offset
        self._value, self._headers = event.SerializeToString(), meta.headers()
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


class _NoKafka:
    def commit(self, **_: Any) -> None:
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
    args = parser.parse_args()
    if not args.logs:
        logging.disable(logging.INFO)
    home = tempfile.mkdtemp(prefix="paysaga-hopcost-")
    odb, pdb = Database(f"sqlite:///{home}/order.db"), Database(f"sqlite:///{home}/payment.db")
    odb.create_tables([Product, Order, OutboxRecord, ProcessedEvent])
    pdb.create_tables([Account, Payment, Transaction, OutboxRecord, ProcessedEvent])
    seed_catalogue(odb)
    seed_accounts(pdb)
    servicer = OrderServicer(odb, OrderChanges())
    rng, n, orders = random.Random(6), args.orders, []

    def create_orders() -> None:
        for i in range(n):
            with odb.write() as session:
                order, _ = create_order(
                    session=session,
                    user_id=rng.randint(1, 5),
                    product_id=rng.randint(1, 5),
                    request_id=f"r{i}",
                    on_change=servicer.publish_change,
                )
            orders.append(order)

    _cpu_ms("CreateOrder transaction (store.create_order + commit)", n, create_orders)
    payment = EventConsumer(
        pdb,
        cast(Any, _NoKafka()),
        {ORDERS.name: on_order_purchased, PAYMENTS.name: on_payment_processed},
    )
    order_hop = EventConsumer(
        odb,
        cast(Any, _NoKafka()),
        {TRANSACTIONS.name: transaction_recorded_handler(servicer.publish_change)},
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
                row.headers()
            with db.write() as session:
                seqs = [row.seq for row in rows]
                session.exec(delete(OutboxRecord).where(col(OutboxRecord.seq).in_(seqs)))

    return work


if __name__ == "__main__":
    main()
