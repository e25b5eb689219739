"""Two replicas of each service on PostgreSQL, as `make up REPLICAS=2 DB=postgres` runs them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from deploy.postgres.runtime import PostgresRuntime
from deploy.stack.datastores import fresh_databases
from deploy.stack.stack import Stack
from tests.e2e.conftest import ORDER, PAYMENT, GrpcurlStack, running, wait_status

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def replicated(
    tmp_path_factory: pytest.TempPathFactory,
    grpcurl_binary: str,
    postgres_server: PostgresRuntime,
) -> Iterator[GrpcurlStack]:
    stack = Stack(
        tmp_path_factory.mktemp("replicated"),
        db="postgres",
        replicas=2,
        ports="free",
        postgres=postgres_server,
        databases=fresh_databases(postgres_server),
        detach=False,
    )
    with running(stack, grpcurl_binary) as started:
        yield started


def test_any_replica_serves_any_call(replicated: GrpcurlStack) -> None:
    second = replicated.grpcurl("order", 1)
    body = {"user_id": 2, "product_id": 1, "request_id": "replicas-1"}
    created = second.call(f"{ORDER}/CreateOrder", body)["order"]
    assert isinstance(created, dict)
    final = wait_status(replicated.order, str(created["id"]))  # on replica 0
    assert final["status"] == "ORDER_STATUS_COMPLETED"
    again = replicated.order.call(f"{ORDER}/CreateOrder", body)["order"]
    assert isinstance(again, dict)
    assert again["id"] == created["id"], "a retry on the other replica is the same order"
    balance = replicated.grpcurl("payment", 1).call(f"{PAYMENT}/GetBalance", {"user_id": 2})
    assert balance["balance_cents"] == "15000"


def test_each_replica_has_its_own_identity(replicated: GrpcurlStack) -> None:
    stack = replicated.stack
    assert [p.instance_id for p in stack.all_processes()] == [
        "order-0",
        "order-1",
        "payment-0",
        "payment-1",
    ]
    assert [p.pid_file.name for p in stack.processes["order"]] == ["order.pid", "order-1.pid"]
    assert len(set(stack.addresses("order") + stack.addresses("payment"))) == 4
