"""WatchOrders a client can trust: initial state first, every change once, resumable; and
with auth on, one caller's streams cannot crowd out another's."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from deploy.stack.processes import is_serving
from paysaga.v1 import orders_pb2, orders_pb2_grpc
from services.common.persistence.migrate import migrate
from services.common.security.auth_settings import AuthSettings
from services.common.security.tokens import mint_token
from services.common.timeutil import utcnow
from services.order.__main__ import MIGRATIONS as ORDER_MIGRATIONS
from services.order.__main__ import WATCH_HEALTH
from services.order.__main__ import build as build_order
from services.order.models import Order
from services.order.settings import OrderSettings
from tests.integration.conftest import Saga
from tests.support import pin_groups_to_end, wait_for, wait_terminal

TERMINAL = (orders_pb2.ORDER_STATUS_COMPLETED, orders_pb2.ORDER_STATUS_FAILED)


def _watch(saga: Saga, timeout_s: float = 60, **request: object) -> grpc.Call:
    stream = saga.orders.WatchOrders(orders_pb2.WatchOrdersRequest(**request), timeout=timeout_s)
    stream.initial_metadata()  # subscribed: nothing from here on is missed
    return stream  # type: ignore[no-any-return]


def _versions(responses: Iterable[orders_pb2.WatchOrdersResponse]) -> list[tuple[str, int]]:
    return [(r.order.id, r.order.version) for r in responses]


def test_a_watch_of_one_order_starts_with_its_state_and_ends_with_its_end(saga: Saga) -> None:
    user = saga.new_user(10000)
    order = saga.order(user, 1)
    responses = list(_watch(saga, order_id=order.id))  # ends by itself
    assert responses[0].initial_state
    assert all(not r.initial_state for r in responses[1:])
    assert responses[-1].order.status == orders_pb2.ORDER_STATUS_COMPLETED
    versions = [r.order.version for r in responses]
    assert versions == sorted(set(versions)), "each version once, in order"
    assert versions[-1] == 2
    assert all(r.resume_token for r in responses)


def test_watching_an_ended_order_returns_its_final_state_at_once(saga: Saga) -> None:
    user = saga.new_user(10000)
    done = saga.completed(user, 1)
    responses = list(_watch(saga, order_id=done.id))
    assert len(responses) == 1
    assert responses[0].initial_state
    assert responses[0].order == done


def test_keep_open_keeps_the_watch_of_an_ended_order_open(saga: Saga) -> None:
    user = saga.new_user(10000)
    done = saga.completed(user, 1)
    stream = _watch(saga, timeout_s=2, order_id=done.id, keep_open=True)
    first = next(stream)
    assert first.order == done
    with pytest.raises(grpc.RpcError) as ended:
        next(stream)
    assert ended.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # open until the deadline


def test_a_user_watch_starts_with_the_users_orders_in_flight(saga: Saga) -> None:
    user = saga.new_user(10000)
    waiting = Order(
        user_id=user, product_id=1, price_cents=5000, status="CREATED", request_id="in-flight"
    )
    with saga.order_db.write() as session:  # as if its saga were still under way
        session.add(waiting)
    done = saga.completed(user, 1)
    stream = _watch(saga, user_id=user)
    first = next(stream)
    stream.cancel()
    assert first.initial_state
    assert first.order.id == waiting.id and first.order.status == orders_pb2.ORDER_STATUS_CREATED
    assert first.order.id != done.id  # ended orders are not in the initial state
    with saga.order_db.write() as session:
        row = session.get(Order, waiting.id)
        assert row is not None
        row.status, row.updated_at = "FAILED", utcnow()


def test_a_watcher_that_reconnects_with_its_token_misses_nothing_and_sees_nothing_twice(
    saga: Saga,
) -> None:
    user = saga.new_user(100000)
    first_stream = _watch(saga, user_id=user)
    orders = [saga.order(user, 1) for _ in range(3)]
    first = next(first_stream)  # one change, then the connection "drops"
    first_stream.cancel()
    for order in orders:  # the sagas go on while nobody watches
        wait_terminal(saga.orders, order.id)
    wanted = {o.id for o in orders}
    seen = [first]
    ended: set[str] = set()
    for response in _watch(saga, user_id=user, resume_token=first.resume_token):
        assert not response.initial_state
        seen.append(response)
        if response.order.status in TERMINAL:
            ended.add(response.order.id)
        if ended == wanted:
            break
    versions = _versions(seen)
    assert len(versions) == len(set(versions)), f"a change was sent twice: {versions}"
    assert sorted(versions) == sorted((o.id, v) for o in orders for v in (1, 2))


def test_a_token_from_the_initial_state_resumes_without_repeating_it(saga: Saga) -> None:
    user = saga.new_user(10000)
    order = saga.order(user, 1)
    first = next(_watch(saga, order_id=order.id))
    assert first.initial_state
    wait_terminal(saga.orders, order.id)
    rest = list(_watch(saga, order_id=order.id, resume_token=first.resume_token))
    versions = [first.order.version, *(r.order.version for r in rest)]
    assert versions == [1, 2] or versions == [2], versions  # CREATED then COMPLETED, once each


def _subscription_token(stream: grpc.Call) -> str:
    tokens = [v for k, v in stream.initial_metadata() if k == "paysaga-resume-token"]
    assert len(tokens) == 1, f"no resume token in the initial metadata: {stream.initial_metadata()}"
    return str(tokens[0])


def test_a_watch_that_has_had_no_change_yet_resumes_from_its_initial_metadata(
    saga: Saga,
) -> None:
    user = saga.new_user(10000)
    first_stream = _watch(saga, user_id=user)
    token = _subscription_token(first_stream)
    first_stream.cancel()  # dropped before any change came
    order = saga.order(user, 1)
    wait_terminal(saga.orders, order.id)
    seen: list[tuple[str, int]] = []
    for response in _watch(saga, user_id=user, resume_token=token):
        assert not response.initial_state  # the user had nothing in flight
        seen.append((response.order.id, response.order.version))
        if response.order.status in TERMINAL:
            break
    assert seen == [(order.id, 1), (order.id, 2)]


def test_a_one_order_watch_resumed_from_its_initial_metadata_sends_the_order_first(
    saga: Saga,
) -> None:
    user = saga.new_user(10000)
    order = saga.completed(user, 1)
    token = _subscription_token(_watch(saga, order_id=order.id))
    responses = list(_watch(saga, order_id=order.id, resume_token=token))
    assert [(r.order.version, r.initial_state) for r in responses] == [(2, True)]


@pytest.mark.parametrize(
    ("request_fields", "message"),
    [
        ({"resume_token": "not-a-token"}, "resume_token is not a token this service issued"),
        ({"keep_open": True}, "keep_open applies to a watch of one order"),
        ({"order_id": "42"}, "order_id must be an order id"),
        ({"order_id": str(uuid.uuid4())}, "does not exist"),
    ],
)
def test_a_bad_watch_request_says_what_to_fix(
    saga: Saga, request_fields: dict[str, object], message: str
) -> None:
    stream = saga.orders.WatchOrders(orders_pb2.WatchOrdersRequest(**request_fields), timeout=10)
    with pytest.raises(grpc.RpcError) as failed:
        next(stream)
    assert failed.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    assert message in (failed.value.details() or "")


# -- per-caller allowance, with auth on ---------------------------------------------------

#: The allowance of the guarded Order service below: small, so a test can take it whole.
PER_CALLER = 3


@pytest.fixture
def guarded_orders(
    kafka_broker: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[orders_pb2_grpc.OrderServiceStub, AuthSettings]]:
    """An Order service of its own with auth on (bearer tokens, HS256) and a per-caller
    allowance of PER_CALLER streams, on SQLite and the session's broker."""
    secret = "watch-allowance-" + "s" * 32
    monkeypatch.setenv("PAYSAGA_AUTH_ENABLED", "1")
    monkeypatch.setenv("PAYSAGA_AUTH_HS256_SECRET", secret)
    url = f"sqlite:///{tmp_path}/order.db"
    migrate(url, ORDER_MIGRATIONS)
    group = f"it-watch-auth-{uuid.uuid4().hex[:6]}"
    pin_groups_to_end(kafka_broker.bootstrap_servers, {group: ["transactions"]})
    app = build_order(
        OrderSettings(
            database_url=url,
            consumer_group=group,
            kafka_bootstrap_servers=kafka_broker.bootstrap_servers,
            grpc_address="127.0.0.1:0",
            log_format="text",
            watch_max_streams_per_caller=PER_CALLER,
        )
    )
    app.start()
    try:
        wait_for("the guarded Order service to be SERVING", lambda: is_serving(app.address))
        wait_for(
            "it to follow order-updates", lambda: is_serving(app.address, service=WATCH_HEALTH)
        )
        with grpc.insecure_channel(app.address) as channel:
            yield orders_pb2_grpc.OrderServiceStub(channel), AuthSettings(hs256_secret=secret)
    finally:
        app.stop()


def test_a_second_user_can_watch_while_one_holds_their_whole_allowance(
    guarded_orders: tuple[orders_pb2_grpc.OrderServiceStub, AuthSettings],
) -> None:
    orders, auth = guarded_orders

    def watch(user: int) -> Any:
        token = mint_token(auth, subject=str(user))
        return orders.WatchOrders(
            orders_pb2.WatchOrdersRequest(user_id=user),
            metadata=[("authorization", f"Bearer {token}")],
            timeout=60,
        )

    subscribed = ("paysaga-watch", "subscribed")
    held = [watch(2) for _ in range(PER_CALLER)]
    try:
        assert all(subscribed in stream.initial_metadata() for stream in held)
        over = watch(2)
        with pytest.raises(grpc.RpcError) as refused:
            next(over)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        details = refused.value.details() or ""
        assert "ORDER_WATCH_MAX_STREAMS_PER_CALLER" in details
        assert "close some of your streams" in details
        other = watch(3)  # user 2 holds every stream they may: user 3 still gets one
        assert subscribed in other.initial_metadata()
        other.cancel()
        held.pop().cancel()  # a stream user 2 closes is theirs to open again
        again = wait_for("user 2's slot to come back", lambda: _opened(watch(2)), timeout_s=10)
        again.cancel()
    finally:
        for stream in held:
            stream.cancel()


def _opened(stream: Any) -> Any:
    """`stream` if the server subscribed it, else None (it was refused: cancelled meanwhile)."""
    if ("paysaga-watch", "subscribed") in stream.initial_metadata():
        return stream
    return None
