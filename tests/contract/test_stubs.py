"""The installed stubs: `from paysaga.v1 import ...` gives a client and server for each service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grpc
import pytest

from paysaga.v1 import orders_pb2, orders_pb2_grpc, payments_pb2, payments_pb2_grpc

pytestmark = pytest.mark.contract

# The public API as released: a missing or renamed RPC here breaks every client.
SERVICES = {
    "OrderService": (
        orders_pb2,
        orders_pb2_grpc,
        {"CreateOrder", "GetOrder", "ListOrders", "WatchOrders"},
    ),
    "PaymentService": (
        payments_pb2,
        payments_pb2_grpc,
        {"GetBalance", "GetTransaction", "ListTransactions"},
    ),
}
SERVER_STREAMING = {"WatchOrders"}


@pytest.mark.parametrize("service", SERVICES)
def test_service_has_the_expected_rpcs(service: str) -> None:
    pb2, _, rpcs = SERVICES[service]
    descriptor = pb2.DESCRIPTOR.services_by_name[service]
    assert {m.name for m in descriptor.methods} == rpcs
    for method in descriptor.methods:
        assert not method.client_streaming, method.full_name
        assert method.server_streaming == (method.name in SERVER_STREAMING), method.full_name


@pytest.mark.parametrize("service", SERVICES)
def test_stub_and_servicer_have_every_rpc(service: str) -> None:
    _, pb2_grpc, rpcs = SERVICES[service]
    servicer = getattr(pb2_grpc, f"{service}Servicer")
    assert callable(getattr(pb2_grpc, f"add_{service}Servicer_to_server"))
    with grpc.insecure_channel("localhost:1") as channel:  # never connects
        stub = getattr(pb2_grpc, f"{service}Stub")(channel)
        for rpc in rpcs:
            assert callable(getattr(stub, rpc)), f"{service}Stub.{rpc}"
            assert callable(getattr(servicer, rpc)), f"{service}Servicer.{rpc}"


def test_installed_package_imports_outside_the_repo(tmp_path: Path) -> None:
    # A client outside the checkout, without gen/ on its path, sees the
    # `paysaga` package that the project's installation provides.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    script = (
        "import paysaga.v1, sys\n"
        "from paysaga.v1 import orders_pb2_grpc, payments_pb2_grpc, events_pb2\n"
        "orders_pb2_grpc.OrderServiceStub, payments_pb2_grpc.PaymentServiceStub\n"
        "sys.stdout.write(paysaga.v1.__file__)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, f"`pip install .` does not provide paysaga.v1:\n{done.stderr}"
    assert Path(done.stdout).parent.name == "v1"
