"""The secured stack (`make up AUTH=1 TLS=1 KAFKA_SECURITY=sasl_ssl`): TLS, bearer tokens,
per-user authorization, and Kafka over SASL_SSL.

The real services in their own processes, with development secrets (CA, server certificate,
HS256 secret), called through grpcurl over TLS as a user would, and through the Python stubs;
their broker's only client listener is SASL_SSL (SCRAM-SHA-512), which they reach with the
KAFKA_* settings alone.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from grpc_health.v1 import health_pb2, health_pb2_grpc

from deploy.kafka.runtime import KafkaRuntime
from deploy.stack.config import ROOT
from deploy.stack.stack import Stack
from paysaga.v1 import orders_pb2, orders_pb2_grpc, payments_pb2, payments_pb2_grpc
from services.common.security.auth_settings import AuthSettings
from services.common.security.tls import CA_CERT, JWT_SECRET, SERVER_CERT, SERVER_KEY
from services.common.security.tokens import mint_token
from tests.e2e.conftest import ORDER, PAYMENT, Grpcurl, running, wait_status

pytestmark = pytest.mark.e2e


@dataclass
class SecureStack:
    stack: Stack
    secrets: Path
    grpcurl: str
    auth: AuthSettings

    def token(self, user: int | None, *, operator: bool = False, ttl_s: int = 600) -> str:
        subject = str(user) if user is not None else "ops"
        return mint_token(self.auth, subject=subject, operator=operator, ttl_s=ttl_s)

    def client(self, service: str, token: str | None, *, header: str = "-H") -> Grpcurl:
        """grpcurl over TLS, verifying the server with the development CA, with a token
        (`header`: -H for every call, -reflect-header for reflection only)."""
        options: tuple[str, ...] = ("-cacert", str(self.secrets / CA_CERT))
        if token is not None:
            options += (header, f"authorization: Bearer {token}")
        return Grpcurl(self.grpcurl, self.stack.address(service), options)


@pytest.fixture(scope="module")
def secure(
    tmp_path_factory: pytest.TempPathFactory, grpcurl_binary: str, kafka_sasl_broker: KafkaRuntime
) -> Iterator[SecureStack]:
    home = tmp_path_factory.mktemp("secure-stack")
    assert kafka_sasl_broker.security is not None
    secrets = kafka_sasl_broker.security.folder  # the development CA and JWT secret too
    env = {
        **kafka_sasl_broker.security.client_env(),
        "PAYSAGA_AUTH_ENABLED": "1",
        "PAYSAGA_AUTH_HS256_SECRET_FILE": str(secrets / JWT_SECRET),
        "PAYSAGA_TLS_CERT_FILE": str(secrets / SERVER_CERT),
        "PAYSAGA_TLS_KEY_FILE": str(secrets / SERVER_KEY),
        "PAYSAGA_TLS_CA_FILE": str(secrets / CA_CERT),  # the launcher's health checks
    }
    auth = AuthSettings(hs256_secret_file=str(secrets / JWT_SECRET))
    stack = Stack(home, ports="free", detach=False, env=env, kafka=kafka_sasl_broker)
    with running(stack, grpcurl_binary) as started:
        yield SecureStack(started.stack, secrets, grpcurl_binary, auth)


def refusal(client: Grpcurl, method: str, body: dict[str, object]) -> tuple[str, str]:
    """grpcurl's error code and message for a call that must fail."""
    done = client.run(method, body)
    assert done.returncode != 0, f"{method} {body} succeeded: {done.stdout}"
    code = message = ""
    for line in done.stderr.splitlines():
        if line.strip().startswith("Code:"):
            code = line.split(":", 1)[1].strip()
        if line.strip().startswith("Message:"):
            message = line.split(":", 1)[1].strip()
    if not code and (found := re.search(r"code = (\w+) desc = (.*)", done.stderr)):
        code, message = found.group(1), found.group(2).strip()  # an error of reflection
    return code, message or done.stderr


def test_without_a_token_unauthenticated(secure: SecureStack) -> None:
    body = {"user_id": 2, "product_id": 1, "request_id": "no-token"}
    # No token at all: reflection (grpcurl's first call) already refuses.
    code, message = refusal(secure.client("order", None), f"{ORDER}/CreateOrder", body)
    assert code == "Unauthenticated", message
    assert "no credentials: send the header `authorization: Bearer <token>`" in message
    # A token for reflection only: the call itself refuses.
    reflect_only = secure.client("order", secure.token(2), header="-reflect-header")
    code, message = refusal(reflect_only, f"{ORDER}/CreateOrder", body)
    assert code == "Unauthenticated", message
    assert message.startswith("no credentials: send the header `authorization: Bearer <token>`")


def test_a_bad_or_expired_token_unauthenticated(secure: SecureStack) -> None:
    expired = mint_token(secure.auth, subject="2", now=time.time() - 7200, ttl_s=60)
    code, message = refusal(
        secure.client("payment", expired), f"{PAYMENT}/GetBalance", {"user_id": 2}
    )
    assert code == "Unauthenticated"
    assert message.endswith("the token has expired: get a new one"), message
    forged = mint_token(AuthSettings(hs256_secret="f" * 40), subject="2")
    code, message = refusal(
        secure.client("payment", forged), f"{PAYMENT}/GetBalance", {"user_id": 2}
    )
    assert code == "Unauthenticated" and "signature does not verify" in message


def test_plaintext_to_a_tls_server_fails(secure: SecureStack) -> None:
    plain = Grpcurl(secure.grpcurl, secure.stack.order_address)
    done = plain.run("grpc.health.v1.Health/Check", {})
    assert done.returncode != 0


def test_health_open_and_reflection_behind_the_token(secure: SecureStack) -> None:
    # A load balancer's health check needs no token (grpcurl needs one for reflection only).
    reflect_only = secure.client("order", secure.token(2), header="-reflect-header")
    health = reflect_only.call("grpc.health.v1.Health/Check", {})
    assert health["status"] == "SERVING"
    ca = grpc.ssl_channel_credentials((secure.secrets / CA_CERT).read_bytes())
    with grpc.secure_channel(secure.stack.order_address, ca) as chan:
        reply = health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    assert secure.client("order", None).run("list").returncode != 0
    listed = secure.client("order", secure.token(2)).run("list")
    assert ORDER in listed.stdout.split(), listed.stderr


def test_user_2_orders_for_user_3_permission_denied(secure: SecureStack) -> None:
    body = {"user_id": 3, "product_id": 1, "request_id": "for-someone-else"}
    code, message = refusal(secure.client("order", secure.token(2)), f"{ORDER}/CreateOrder", body)
    assert code == "PermissionDenied"
    assert message == "user_id 3 is not you: your token acts for user 2 only"


def test_user_2_for_user_2_completes(secure: SecureStack) -> None:
    """The whole saga: over TLS with a token, between services talking SASL_SSL to Kafka."""
    order = secure.client("order", secure.token(2))
    body = {"user_id": 2, "product_id": 1, "request_id": "mine-1"}
    created = order.call(f"{ORDER}/CreateOrder", body)["order"]
    assert isinstance(created, dict)
    final = wait_status(order, str(created["id"]))
    assert final["status"] == "ORDER_STATUS_COMPLETED"
    balance = secure.client("payment", secure.token(2)).call(
        f"{PAYMENT}/GetBalance", {"user_id": 2}
    )
    assert balance["balance_cents"] == "15000"  # 200.00 - 50.00


@pytest.mark.parametrize(
    ("service", "method", "body"),
    [
        ("order", f"{ORDER}/CreateOrder", {"user_id": 3, "product_id": 1, "request_id": "x"}),
        ("order", f"{ORDER}/ListOrders", {"user_id": 3}),
        ("order", f"{ORDER}/ListOrders", {}),  # every user
        ("order", f"{ORDER}/WatchOrders", {"user_id": 3}),
        ("order", f"{ORDER}/WatchOrders", {}),  # every user
        ("payment", f"{PAYMENT}/GetBalance", {"user_id": 3}),
        ("payment", f"{PAYMENT}/ListTransactions", {"user_id": 3}),
        ("payment", f"{PAYMENT}/ListTransactions", {}),  # every user
    ],
)
def test_another_users_data_permission_denied(
    secure: SecureStack, service: str, method: str, body: dict[str, object]
) -> None:
    code, message = refusal(secure.client(service, secure.token(2)), method, body)
    assert code == "PermissionDenied", message
    assert "your token acts for user 2" in message or "needs the operator scope" in message


def test_an_operator_sees_every_user(secure: SecureStack) -> None:
    operator = secure.token(None, operator=True)
    listed = secure.client("order", operator).call(f"{ORDER}/ListOrders", {})
    assert "orders" in listed
    balance = secure.client("payment", operator).call(f"{PAYMENT}/GetBalance", {"user_id": 3})
    assert balance["balance_cents"] == "50000"


def test_orders_and_transactions_by_id_only_for_their_owner(secure: SecureStack) -> None:
    """Looked up by id, another user's order or transaction does not exist for you."""
    owner = secure.token(4)
    order = secure.client("order", owner)
    created = order.call(
        f"{ORDER}/CreateOrder", {"user_id": 4, "product_id": 1, "request_id": "owned"}
    )["order"]
    assert isinstance(created, dict)
    order_id = str(created["id"])
    wait_status(order, order_id)
    payment = secure.client("payment", owner)
    listed = payment.call(f"{PAYMENT}/ListTransactions", {"user_id": 4, "order_id": order_id})
    transaction_id = listed["transactions"][0]["id"]  # type: ignore[index]

    other = secure.token(5)
    code, message = refusal(
        secure.client("order", other), f"{ORDER}/GetOrder", {"order_id": order_id}
    )
    assert (code, message) == ("NotFound", f"order {order_id} does not exist")
    code, _ = refusal(
        secure.client("payment", other),
        f"{PAYMENT}/GetTransaction",
        {"transaction_id": transaction_id},
    )
    assert code == "NotFound"
    code, _ = refusal(
        secure.client("order", other),
        f"{ORDER}/WatchOrders",
        {"user_id": 5, "order_id": order_id},
    )
    assert code == "NotFound"


def test_a_reused_request_id_never_reveals_another_users_order(secure: SecureStack) -> None:
    key = "shared-key"
    body2 = {"user_id": 2, "product_id": 1, "request_id": key}
    body3 = {"user_id": 3, "product_id": 2, "request_id": key}
    first = secure.client("order", secure.token(2)).call(f"{ORDER}/CreateOrder", body2)["order"]
    second = secure.client("order", secure.token(3)).call(f"{ORDER}/CreateOrder", body3)["order"]
    assert isinstance(first, dict) and isinstance(second, dict)
    assert first["id"] != second["id"]
    assert (second["user_id"], second["product_id"]) == ("3", "2")
    again = secure.client("order", secure.token(3)).call(f"{ORDER}/CreateOrder", body3)["order"]
    assert isinstance(again, dict) and again["id"] == second["id"]


def test_python_stubs_over_tls_with_a_token(secure: SecureStack) -> None:
    ca = (secure.secrets / CA_CERT).read_bytes()
    token = secure.token(5)
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(ca), grpc.access_token_call_credentials(token)
    )
    with (
        grpc.secure_channel(secure.stack.order_address, credentials) as order_channel,
        grpc.secure_channel(secure.stack.payment_address, credentials) as payment_channel,
    ):
        orders = orders_pb2_grpc.OrderServiceStub(order_channel)
        payments = payments_pb2_grpc.PaymentServiceStub(payment_channel)
        changes = orders.WatchOrders(orders_pb2.WatchOrdersRequest(user_id=5), timeout=60)
        changes.initial_metadata()
        request = orders_pb2.CreateOrderRequest(
            user_id=5, product_id=3, request_id=str(uuid.uuid4())
        )
        order = orders.CreateOrder(request, timeout=10).order
        for change in changes:
            if change.order.id == order.id and change.order.status in (
                orders_pb2.ORDER_STATUS_COMPLETED,
                orders_pb2.ORDER_STATUS_FAILED,
            ):
                assert change.order.status == orders_pb2.ORDER_STATUS_COMPLETED
                break
        changes.cancel()
        balance = payments.GetBalance(payments_pb2.GetBalanceRequest(user_id=5), timeout=5)
        assert balance.user_id == 5
        for call in (
            lambda: payments.GetBalance(payments_pb2.GetBalanceRequest(user_id=1), timeout=5),
            lambda: list(orders.WatchOrders(orders_pb2.WatchOrdersRequest(user_id=1), timeout=5)),
        ):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_off_loopback_without_tls_and_auth_refuses_to_start(secure: SecureStack) -> None:
    """A payment service bound to every interface, with TLS and auth unset: exit 2, and why."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}",
        "PAYMENT_GRPC_ADDRESS": "0.0.0.0:0",
        "PAYMENT_DATABASE_URL": secure.stack.database_urls["payment"],
        "PAYMENT_LOG_FORMAT": "text",
        "KAFKA_BOOTSTRAP_SERVERS": secure.stack.bootstrap,
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.payment"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert "refusing to serve 0.0.0.0:0 without TLS and authentication" in output
    assert json.dumps("PAYSAGA_INSECURE=1")[1:-1] in output


# -- Kafka over SASL_SSL: the services above reach it; others do not -------------------------


def _errors_of(config: dict[str, object]) -> list[KafkaError]:
    """The errors a metadata request with `config` meets (none if it succeeds)."""
    errors: list[KafkaError] = []
    admin = AdminClient({**config, "error_cb": errors.append, "log_level": 0})
    try:
        admin.list_topics(timeout=10)
    except KafkaException as exc:
        errors.append(exc.args[0])
        admin.poll(1)  # serves error_cb: the reason the broker could not be used
    return errors


def test_kafka_refuses_a_wrong_password(kafka_sasl_broker: KafkaRuntime) -> None:
    assert kafka_sasl_broker.security is not None
    config = {
        "bootstrap.servers": kafka_sasl_broker.bootstrap_servers,
        **kafka_sasl_broker.security.client_config(password="not-the-password"),
    }
    errors = _errors_of(config)
    assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), errors
    assert any("Authentication failed" in e.str() for e in errors), errors


def test_kafka_refuses_plaintext(kafka_sasl_broker: KafkaRuntime) -> None:
    errors = _errors_of({"bootstrap.servers": kafka_sasl_broker.bootstrap_servers})
    assert errors, "a plaintext client got metadata from the SASL_SSL listener"


def test_kafka_accepts_the_right_password(kafka_sasl_broker: KafkaRuntime) -> None:
    config = {
        "bootstrap.servers": kafka_sasl_broker.bootstrap_servers,
        **kafka_sasl_broker.client_config,
    }
    assert _errors_of(config) == []
