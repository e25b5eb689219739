"""`make up ROLES=split`: every replica as an api process and a worker process, on SQLite (two
processes on one file per service) and on PostgreSQL (two replicas: four processes per
service). Orders taken by the api processes complete, WatchOrders on an api process follows
them, `paysaga status` sees every process, and SIGTERM drains them all."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import func, select

from deploy.postgres.runtime import PostgresRuntime
from deploy.stack.datastores import fresh_databases
from deploy.stack.stack import Stack
from paysaga.v1 import orders_pb2, orders_pb2_grpc
from services.common.messaging.outbox import OutboxRecord
from services.common.persistence.db import Database
from tests.e2e.conftest import ORDER, GrpcurlStack, running, wait_status
from tests.support import wait_for

pytestmark = pytest.mark.e2e

#: The console script `pip install` made, next to this interpreter.
PAYSAGA = str(Path(sys.executable).parent / "paysaga")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def split(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, grpcurl_binary: str
) -> Iterator[GrpcurlStack]:
    home = tmp_path_factory.mktemp(f"split-{request.param}")
    if request.param == "sqlite":
        stack = Stack(home, ports="free", detach=False, roles="split")
    else:
        server: PostgresRuntime = request.getfixturevalue("postgres_server")
        stack = Stack(
            home,
            db="postgres",
            replicas=2,
            ports="free",
            postgres=server,
            databases=fresh_databases(server),
            detach=False,
            roles="split",
        )
    with running(stack, grpcurl_binary) as started:
        yield started


def _orders(address: str) -> orders_pb2_grpc.OrderServiceStub:
    return orders_pb2_grpc.OrderServiceStub(grpc.insecure_channel(address))


def test_every_replica_runs_as_an_api_and_a_worker(split: GrpcurlStack) -> None:
    stack = split.stack
    names = [proc.name for proc in stack.processes["order"]]
    expected = ["order-0-api", "order-0-worker"]
    if stack.replicas == 2:
        expected += ["order-1-api", "order-1-worker"]
    assert names == expected
    assert set(stack.pids()) >= {*expected, "payment-0-api", "payment-0-worker"}
    with pytest.raises(grpc.RpcError) as refused:
        worker = stack.process("order", 0, "worker").address
        _orders(worker).GetOrder(orders_pb2.GetOrderRequest(order_id="x"), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED, "the public API is the api's"


def test_orders_complete_and_watch_orders_follows_them_on_an_api_process(
    split: GrpcurlStack,
) -> None:
    stack = split.stack
    stream = _orders(stack.address("order", 0)).WatchOrders(
        orders_pb2.WatchOrdersRequest(user_id=3), timeout=90
    )
    assert stream.initial_metadata() is not None  # the stream is open: no change is missed
    created = []
    for replica in range(stack.replicas):  # every api process takes orders
        body = {"user_id": 3, "product_id": 1, "request_id": f"roles-{uuid.uuid4()}"}
        answer = split.grpcurl("order", replica).call(f"{ORDER}/CreateOrder", body)["order"]
        assert isinstance(answer, dict)
        created.append(str(answer["id"]))
    for order_id in created:
        assert wait_status(split.order, order_id)["status"] == "ORDER_STATUS_COMPLETED"
    completed: set[str] = set()
    for change in stream:
        if change.order.status == orders_pb2.ORDER_STATUS_COMPLETED:
            completed.add(change.order.id)
        if completed >= set(created):
            break
    stream.cancel()


def test_paysaga_status_sees_every_process(split: GrpcurlStack) -> None:
    stack = split.stack
    flags = [
        "--order",
        ",".join(stack.admin_addresses("order")),
        "--payment",
        ",".join(stack.admin_addresses("payment")),
    ]

    def every_process_serving() -> dict[str, Any] | None:
        done = subprocess.run(
            [PAYSAGA, *flags, "status", "--json"], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        found = {replica["replica"]: replica for replica in json.loads(done.stdout)}
        assert set(found) == {proc.name for proc in stack.all_processes()}
        serving = all(set(r["health"].values()) == {"SERVING"} for r in found.values())
        return found if serving else None  # a status check is refreshed every 5 s

    found = wait_for("every process's health names to be SERVING", every_process_serving, 30)
    for name, replica in found.items():
        if name.endswith("-worker"):
            assert {"paysaga.consumer", "paysaga.outbox"} <= set(replica["health"]), name
        else:
            assert "paysaga.consumer" not in replica["health"], f"{name} runs no consumer"
    for service in ("order", "payment"):  # its workers applied the orders' events
        applied = [int(r.get("records_applied", 0)) for n, r in found.items() if n[0] == service[0]]
        assert sum(applied) > 0, f"{service}: {applied}"
    assert "paysaga.watch" in found["order-0-api"]["health"]
    table = subprocess.run([PAYSAGA, *flags, "status"], capture_output=True, text=True, timeout=60)
    assert "order-0-api" in table.stdout and "order-0-worker" in table.stdout


def test_sigterm_drains_the_api_processes_then_the_workers(split: GrpcurlStack) -> None:
    """The last test of the module: it stops the stack. Orders taken just before the stop
    are committed by the api processes, whose outbox rows the workers, stopped after them,
    publish before they end."""
    stack = split.stack
    for n in range(20):
        body = {"user_id": 4, "product_id": 1, "request_id": f"drain-{uuid.uuid4()}-{n}"}
        split.grpcurl("order", n % stack.replicas).call(f"{ORDER}/CreateOrder", body)
    processes = stack.all_processes()
    stack.stop_services()
    for proc in processes:
        assert proc.pid() is None, f"{proc.name} still runs"
        status = proc.exit_status()
        assert status == 0, f"{proc.name} exited with {status}\n{proc.log_tail()}"
        assert '"msg": "stopped"' in proc.log_tail(5), proc.log_tail()
    for name, url in stack.database_urls.items():
        db = Database(url)
        with db.read() as session:
            left = session.execute(select(func.count()).select_from(OutboxRecord)).scalar_one()
        db.dispose()
        assert left == 0, f"{left} {name} outbox row(s) left unpublished"
