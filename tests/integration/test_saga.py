"""The saga over the real broker and real databases: outcomes, duplicates, poison, concurrency."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from functools import partial
from typing import Any

import grpc
import pytest
from confluent_kafka import Message, Producer
from sqlalchemy import insert

from paysaga.v1 import events_pb2, orders_pb2, payments_pb2
from services.common.headers import header_dict
from services.common.messaging.cloudevents import EventMeta
from services.common.timeutil import to_timestamp, utcnow
from services.order.models import ORDERS_TABLE, SagaDeadline
from services.payment.models import Payment
from services.saga.topics import ORDERS
from tests.integration.conftest import Saga
from tests.support import read_topic, wait_for, wait_terminal

pytestmark = pytest.mark.integration

PRICE = {1: 5000, 2: 7500, 3: 10000, 4: 50000, 5: 100000}


def balance(saga: Saga, user_id: int) -> int:
    reply = saga.payments.GetBalance(payments_pb2.GetBalanceRequest(user_id=user_id))
    return reply.balance_cents


def transactions_of(saga: Saga, user_id: int) -> list[payments_pb2.Transaction]:
    reply = saga.payments.ListTransactions(
        payments_pb2.ListTransactionsRequest(user_id=user_id, page_size=1000)
    )
    return list(reply.transactions)


def test_happy_path_completes_and_debits(saga: Saga) -> None:
    user = saga.new_user(10000)
    order = saga.completed(user, 1)
    assert order.status == orders_pb2.ORDER_STATUS_COMPLETED
    assert order.failure_reason == ""
    assert balance(saga, user) == 5000
    [transaction] = transactions_of(saga, user)
    assert (transaction.order_id, transaction.amount_cents) == (order.id, 5000)


def test_unaffordable_order_fails_with_its_reason(saga: Saga) -> None:
    user = saga.new_user(5000)
    order = saga.completed(user, 5)
    assert order.status == orders_pb2.ORDER_STATUS_FAILED
    assert order.failure_reason == "insufficient balance: 50.00 < 1000.00"
    assert balance(saga, user) == 5000
    assert transactions_of(saga, user) == []


def test_unknown_user_fails(saga: Saga) -> None:
    order = saga.completed(987654, 1)
    assert order.status == orders_pb2.ORDER_STATUS_FAILED
    assert order.failure_reason == "unknown user 987654"


def test_request_id_makes_create_idempotent(saga: Saga) -> None:
    user = saga.new_user(10000)
    key = str(uuid.uuid4())
    first = saga.order(user, 1, request_id=key)
    again = saga.order(user, 1, request_id=key)
    assert again.id == first.id
    wait_terminal(saga.orders, first.id)
    assert balance(saga, user) == 5000
    with pytest.raises(grpc.RpcError) as err:
        saga.order(user, 2, request_id=key)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "already used for another order" in (err.value.details() or "")
    assert str(user) not in (err.value.details() or "")


def test_request_ids_are_scoped_to_their_user(saga: Saga) -> None:
    first, second = saga.new_user(10000), saga.new_user(10000)
    key = str(uuid.uuid4())
    mine = saga.order(first, 1, request_id=key)
    theirs = saga.order(second, 1, request_id=key)
    assert mine.id != theirs.id and theirs.user_id == second


def test_concurrent_retries_of_one_request_make_one_order(saga: Saga) -> None:
    user = saga.new_user(10000)
    key = str(uuid.uuid4())
    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = set(pool.map(lambda _: saga.order(user, 1, request_id=key).id, range(32)))
    assert len(ids) == 1
    wait_terminal(saga.orders, ids.pop())
    assert balance(saga, user) == 5000


def test_an_empty_request_id_is_refused(saga: Saga) -> None:
    with pytest.raises(grpc.RpcError) as err:
        saga.orders.CreateOrder(orders_pb2.CreateOrderRequest(user_id=1, product_id=1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "request_id is required" in (err.value.details() or "")


def _redeliver(saga: Saga, records: list[Message]) -> None:
    producer = Producer({"bootstrap.servers": saga.bootstrap, "enable.idempotence": True})
    for r in records:
        producer.produce(r.topic(), key=r.key(), value=r.value(), headers=r.headers())
    assert producer.flush(30) == 0


def _records_of(saga: Saga, order_id: str) -> list[Message]:
    def about(record: Message) -> bool:
        return header_dict(record.headers()).get("ce_subject") == order_id

    return [
        read_topic(saga.bootstrap, topic, about)[0]
        for topic in ("orders", "payments", "transactions")
    ]


def test_every_event_delivered_twice_changes_nothing(saga: Saga) -> None:
    user = saga.new_user(20000)
    completed = saga.completed(user, 1)
    failed = saga.completed(user, 5)
    _redeliver(saga, _records_of(saga, completed.id) + _records_of(saga, failed.id))
    # Same user, same key, same partitions: once this order has ended, the duplicates
    # ahead of it on every topic have been consumed.
    sentinel = saga.completed(user, 1)
    assert sentinel.status == orders_pb2.ORDER_STATUS_COMPLETED
    assert balance(saga, user) == 10000
    assert sorted(t.order_id for t in transactions_of(saga, user)) == sorted(
        [completed.id, sentinel.id]
    )
    for order in (completed, failed):
        now = saga.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order.id)).order
        assert (now.status, now.update_time) == (order.status, order.update_time)


@pytest.mark.parametrize("topic", ["orders", "payments", "transactions"])
def test_poison_goes_to_the_dead_letter_topic_and_later_events_flow(saga: Saga, topic: str) -> None:
    user = saga.new_user(10000)
    marker = f"poison-{uuid.uuid4()}".encode()
    producer = Producer({"bootstrap.servers": saga.bootstrap})
    key = str(user).encode()
    odd_headers = [("bin", b"\xff\x00\xfe"), ("none", None), ("bin", b"again")]
    value = b"\x08\x96\x01\xff" + marker
    producer.produce(topic, key=key, value=value, headers=odd_headers)
    producer.produce(topic, key=None, value=value + b"-nullkey")
    assert producer.flush(30) == 0
    order = saga.completed(user, 1)
    assert order.status == orders_pb2.ORDER_STATUS_COMPLETED
    dead = read_topic(saga.bootstrap, f"{topic}.dlt", lambda r: marker in (r.value() or b""), 2)
    [keyed] = [d for d in dead if d.key() is not None]
    [nullkey] = [d for d in dead if d.key() is None]
    assert (keyed.key(), keyed.value(), nullkey.value()) == (key, value, value + b"-nullkey")
    assert keyed.headers()[:3] == odd_headers  # byte for byte, in order, then the dlt_* ones
    headers = header_dict(keyed.headers())
    assert headers["dlt_reason"].startswith("missing CloudEvents header")
    assert headers["dlt_topic"] == topic
    assert int(headers["dlt_offset"]) >= 0 and int(headers["dlt_partition"]) >= 0
    assert {"dlt_time"} <= set(headers)


def test_concurrent_orders_of_one_user_never_overdraw(saga: Saga) -> None:
    user = saga.new_user(10000)
    with ThreadPoolExecutor(max_workers=20) as pool:
        orders = list(pool.map(lambda _: saga.order(user, 1), range(20)))
    finals = [wait_terminal(saga.orders, o.id) for o in orders]
    completed = [o for o in finals if o.status == orders_pb2.ORDER_STATUS_COMPLETED]
    assert len(completed) == 2
    assert balance(saga, user) == 0
    assert len(transactions_of(saga, user)) == 2
    assert all(
        o.failure_reason == "insufficient balance: 0.00 < 50.00"
        for o in finals
        if o.status == orders_pb2.ORDER_STATUS_FAILED
    )


def test_list_orders_pages_through_a_users_orders(saga: Saga) -> None:
    user = saga.new_user(0)
    ids = {saga.order(user, 1).id for _ in range(5)}
    seen: list[str] = []
    token = ""
    while True:
        page = saga.orders.ListOrders(
            orders_pb2.ListOrdersRequest(user_id=user, page_size=2, page_token=token)
        )
        seen += [o.id for o in page.orders]
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == 5
    assert set(seen) == ids


def test_watch_orders_streams_each_change(saga: Saga) -> None:
    user = saga.new_user(10000)
    stream = saga.orders.WatchOrders(orders_pb2.WatchOrdersRequest(user_id=user), timeout=60)
    stream.initial_metadata()  # the server subscribed: no change from here on is missed
    order = saga.order(user, 1)
    statuses = []
    for change in stream:
        assert change.order.id == order.id
        statuses.append(change.order.status)
        if change.order.status in (
            orders_pb2.ORDER_STATUS_COMPLETED,
            orders_pb2.ORDER_STATUS_FAILED,
        ):
            break
    stream.cancel()
    assert statuses == [orders_pb2.ORDER_STATUS_CREATED, orders_pb2.ORDER_STATUS_COMPLETED]


def _publish_as_order_service(saga: Saga, event: Any, user: int, order_id: str) -> None:
    meta = EventMeta.new(ce_type=event.DESCRIPTOR.full_name, source=ORDERS.source, subject=order_id)
    producer = Producer({"bootstrap.servers": saga.bootstrap})
    producer.produce("orders", key=str(user).encode(), value=event.SerializeToString(),
                     headers=meta.headers())  # fmt: skip
    assert producer.flush(30) == 0


def _purchase(order_id: str, user: int) -> events_pb2.OrderPurchased:
    return events_pb2.OrderPurchased(
        order_id=order_id,
        user_id=user,
        product_id=1,
        amount_cents=5000,
        create_time=to_timestamp(utcnow()),
    )


def _is_about(order_id: str, record: Message) -> bool:
    return header_dict(record.headers()).get("ce_subject") == order_id


def _is_order_failed(order_id: str, record: Message) -> bool:
    headers = header_dict(record.headers())
    return headers.get("ce_type") == "paysaga.v1.OrderFailed" and headers["ce_subject"] == order_id


def _store_created_order(saga: Saga, user: int, order_id: str, *, overdue: bool) -> None:
    """An order row as CreateOrder writes it, with its saga deadline already passed."""
    now = utcnow()
    with saga.order_db.write() as session:
        session.execute(insert(ORDERS_TABLE).values(
            id=order_id, user_id=user, product_id=1, price_cents=5000, status="CREATED",
            failure_reason="", request_id=str(uuid.uuid4()), created_at=now, updated_at=now,
        ))  # fmt: skip
        due = now - timedelta(seconds=1) if overdue else now + timedelta(hours=1)
        session.add(SagaDeadline(order_id=order_id, due_at=due))


def _payment_of(saga: Saga, order_id: str) -> Payment | None:
    with saga.payment_db.read() as session:
        return session.get(Payment, order_id)


def test_an_order_past_its_deadline_fails_and_is_never_charged(saga: Saga) -> None:
    user = saga.new_user(10000)
    order_id = str(uuid.uuid4())
    _store_created_order(saga, user, order_id, overdue=True)  # its OrderPurchased never left
    final = wait_terminal(saga.orders, order_id)
    assert final.status == orders_pb2.ORDER_STATUS_FAILED
    assert final.failure_reason.startswith("saga deadline passed")
    payment = wait_for("the payment service to hear of it", lambda: _payment_of(saga, order_id))
    assert not payment.approved and payment.reason.startswith("order failed before its payment")
    # The late OrderPurchased finds the order decided: no charge, ever.
    purchase = _purchase(order_id, user)
    _publish_as_order_service(saga, purchase, user, order_id)
    assert saga.completed(user, 1).status == orders_pb2.ORDER_STATUS_COMPLETED  # sentinel
    assert balance(saga, user) == 5000
    assert [t.kind for t in transactions_of(saga, user)] == [payments_pb2.TRANSACTION_KIND_CHARGE]


def test_money_taken_for_an_order_that_failed_goes_back_exactly_once(saga: Saga) -> None:
    user = saga.new_user(10000)
    order_id = str(uuid.uuid4())
    purchase = _purchase(order_id, user)
    # The payment service charges an order the order service does not know yet: the
    # order service dead-letters the answer, and the money stays taken...
    _publish_as_order_service(saga, purchase, user, order_id)
    wait_for("the charge", lambda: balance(saga, user) == 5000)
    assert len(transactions_of(saga, user)) == 1  # the CHARGE is recorded with the debit
    read_topic(saga.bootstrap, "transactions.dlt", partial(_is_about, order_id))
    # ...until the order's saga deadline fails it, and OrderFailed gives the money back.
    _store_created_order(saga, user, order_id, overdue=True)

    def refunded() -> orders_pb2.Order | None:
        order = saga.orders.GetOrder(orders_pb2.GetOrderRequest(order_id=order_id)).order
        return order if "refunded 50.00" in order.failure_reason else None

    final = wait_for("the refund to be noted on the order", refunded)
    assert final.status == orders_pb2.ORDER_STATUS_FAILED
    assert final.failure_reason.startswith("saga deadline passed: no payment outcome within")
    assert "; refunded 50.00 (transaction " in final.failure_reason
    assert balance(saga, user) == 10000
    kinds = sorted(t.kind for t in transactions_of(saga, user))
    assert kinds == [payments_pb2.TRANSACTION_KIND_CHARGE, payments_pb2.TRANSACTION_KIND_REFUND]
    # A replay of every event of this order changes nothing.
    [failed] = read_topic(saga.bootstrap, "orders", partial(_is_order_failed, order_id))
    _redeliver(saga, [failed, failed])
    assert saga.completed(user, 1).status == orders_pb2.ORDER_STATUS_COMPLETED  # sentinel
    assert balance(saga, user) == 5000
    assert len(transactions_of(saga, user)) == 3
