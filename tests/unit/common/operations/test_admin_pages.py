"""The admin lists hand out page tokens (AIP-158): every row once, in order, across pages of
`limit`, with rows tied on their time; a token of another listing is refused; `paysaga`
follows the pages."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from concurrent import futures
from datetime import timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest

from paysaga.admin.v1 import admin_pb2
from services.cli import client as cli_client
from services.cli import run
from services.common.messaging.journal import DeadLetter, SagaStep
from services.common.messaging.outbox import OutboxRecord, ParkedRecord
from services.common.persistence.db import Database
from services.common.security.identity import LOCAL_CALLER, acting_as
from services.common.timeutil import utcnow
from services.order.admin import OrderAdmin, order_admin
from services.order.models import Order, SagaDeadline
from services.order.settings import OrderSettings

pytestmark = pytest.mark.unit

ROWS = 7


class Ended(Exception):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self.code = code


class Context:
    """A servicer context: abort ends the call; the trailing metadata is kept."""

    def __init__(self) -> None:
        self.trailing: Any = ()

    def set_trailing_metadata(self, metadata: Any) -> None:
        self.trailing = metadata

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        raise Ended(code, details)


@pytest.fixture
def admin(tmp_path: Path) -> OrderAdmin:
    db = Database(f"sqlite:///{tmp_path}/order.db")
    db.create_tables([Order, SagaDeadline, DeadLetter, SagaStep, OutboxRecord, ParkedRecord])
    hour_ago = utcnow() - timedelta(hours=1)
    with db.write() as session:
        for i in range(ROWS):
            moment = hour_ago + timedelta(seconds=i // 2)  # pairs tied on their time
            session.add(
                Order(user_id=1, product_id=1, price_cents=100, status="CREATED", created_at=moment)
            )
            session.add(
                Order(
                    user_id=2,
                    product_id=1,
                    price_cents=100,
                    status="FAILED",
                    created_at=moment,
                    charged_at=moment,
                )
            )
            session.add(
                DeadLetter(
                    id=f"transactions:0:{i}",
                    topic="transactions",
                    kafka_partition=0,
                    kafka_offset=i,
                    event_id=f"e-{i}",
                    event_type="paysaga.v1.TransactionRecorded",
                    order_id="o",
                    reason="poison",
                    headers=b"",
                    dead_lettered_at=moment,
                )
            )
    return order_admin(db, OrderSettings())


def walk(list_page: Callable[[str], Any], ids: Callable[[Any], list[str]]) -> list[list[str]]:
    pages, token = [], ""
    while True:
        answer = list_page(token)
        pages.append(ids(answer))
        token = answer.next_page_token
        if not token:
            return pages


def test_stuck_orders_page_oldest_first(admin: OrderAdmin) -> None:
    with acting_as(LOCAL_CALLER):
        everything = admin.ListStuckOrders(admin_pb2.ListStuckOrdersRequest(limit=100), Context())
        pages = walk(
            lambda token: admin.ListStuckOrders(
                admin_pb2.ListStuckOrdersRequest(limit=3, page_token=token), Context()
            ),
            lambda answer: [o.order_id for o in answer.orders],
        )
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sum(pages, []) == [o.order_id for o in everything.orders]
    assert everything.next_page_token == "" and len(everything.orders) == ROWS


def test_held_orders_page_oldest_charge_first(admin: OrderAdmin) -> None:
    with acting_as(LOCAL_CALLER):
        everything = admin.ListHeldOrders(admin_pb2.ListHeldOrdersRequest(), Context())
        pages = walk(
            lambda token: admin.ListHeldOrders(
                admin_pb2.ListHeldOrdersRequest(limit=2, page_token=token), Context()
            ),
            lambda answer: [o.order_id for o in answer.orders],
        )
    assert [len(p) for p in pages] == [2, 2, 2, 1]
    assert sum(pages, []) == [o.order_id for o in everything.orders]
    assert len(set(sum(pages, []))) == ROWS


def test_dead_letters_page_newest_first(admin: OrderAdmin) -> None:
    with acting_as(LOCAL_CALLER):
        pages = walk(
            lambda token: admin.ListDeadLetters(
                admin_pb2.ListDeadLettersRequest(limit=4, page_token=token), Context()
            ),
            lambda answer: [d.id for d in answer.dead_letters],
        )
    assert [len(p) for p in pages] == [4, 3]
    ids = sum(pages, [])
    assert sorted(ids) == sorted(f"transactions:0:{i}" for i in range(ROWS))
    assert ids[0] == "transactions:0:6"  # the newest


def test_a_token_of_other_filters_is_refused(admin: OrderAdmin) -> None:
    with acting_as(LOCAL_CALLER):
        first = admin.ListDeadLetters(admin_pb2.ListDeadLettersRequest(limit=1), Context())
        context = Context()
        with pytest.raises(Ended) as ended:
            admin.ListDeadLetters(
                admin_pb2.ListDeadLettersRequest(
                    topic="transactions", limit=1, page_token=first.next_page_token
                ),
                context,
            )
    assert ended.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "other filters" in str(ended.value)
    assert b"INVALID_PAGE_REQUEST" in dict(context.trailing)["grpc-status-details-bin"]


@pytest.fixture
def served(admin: OrderAdmin) -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    admin.register(server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}"
    server.stop(0)


def test_the_command_follows_the_pages(
    served: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(cli_client, "MAX_PAGE", 2)
    for name in ("PAYSAGA_TLS_CA_FILE", "PAYSAGA_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    assert run(["--order", served, "orders", "stuck", "--limit", "5", "--json"]) == 0
    stuck = json.loads(capsys.readouterr().out)
    assert len({o["order_id"] for o in stuck}) == 5
    assert run(["--order", served, "orders", "stuck", "--limit", "50", "--json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == ROWS
