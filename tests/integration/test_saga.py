"""The saga over the real broker and real databases: outcomes, duplicates, poison, concurrency."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
from confluent_kafka import Message, Producer

from paysaga.v1 import orders_pb2, payments_pb2
from services.common.cloudevents import header_dict
from tests.integration.conftest import Saga
from tests.support import read_topic, wait_terminal

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
    producer.produce(topic, key=str(user).encode(), value=b"\x08\x96\x01\xff" + marker)
    assert producer.flush(30) == 0
    order = saga.completed(user, 1)
    assert order.status == orders_pb2.ORDER_STATUS_COMPLETED
    [dead] = read_topic(saga.bootstrap, f"{topic}.dlt", lambda r: marker in (r.value() or b""))
    headers = header_dict(dead.headers())
    assert headers["dlt_reason"].startswith("missing CloudEvents header")
    assert headers["dlt_original_topic"] == topic


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
