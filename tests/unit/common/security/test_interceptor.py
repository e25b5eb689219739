"""The auth interceptor on a real in-process gRPC server: who gets through, with which status.

Both kinds of servicer method (coroutines on the loop, plain ones on the thread pool) see the
verified caller; authz refusals end as PERMISSION_DENIED; health stays open; operator-only
services need the operator scope.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.security import authz, tls
from services.common.security.auth_settings import AuthSettings
from services.common.security.identity import current_caller
from services.common.security.interceptor import authenticator
from services.common.security.tokens import mint_token
from services.common.serving.grpc_app import GrpcApp

pytestmark = pytest.mark.unit

SETTINGS = AuthSettings(enabled=True, hs256_secret="k" * 40)


def whoami(request: bytes, _context: grpc.ServicerContext) -> bytes:
    authz.require_user(int(request.decode() or "0"))
    caller = current_caller()
    assert caller is not None
    return caller.subject.encode()


async def whoami_async(request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    authz.require_user(int(request.decode() or "0"))
    caller = current_caller()
    assert caller is not None
    return caller.subject.encode()


def _register(server: grpc.aio.Server) -> None:
    handlers: dict[str, Any] = {
        "WhoAmI": grpc.unary_unary_rpc_method_handler(whoami),
        "WhoAmIAsync": grpc.unary_unary_rpc_method_handler(whoami_async),
    }
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler("t.T", handlers),
            grpc.method_handlers_generic_handler("paysaga.admin.v1.Admin", handlers),
        ]
    )


def _app(settings: AuthSettings) -> GrpcApp:
    return GrpcApp(
        address="127.0.0.1:0",
        service_names=["t.T"],
        register=_register,
        workers=[],
        readiness_checks=[],
        drain_s=0,
        interceptors=[authenticator(settings)],
    )


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    app = _app(SETTINGS)
    app.start()
    yield app.address
    app.stop()


@pytest.fixture(scope="module")
def channel(address: str) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(address) as chan:
        yield chan


def call(
    channel: grpc.Channel, method: str, body: str, token: str | None
) -> tuple[grpc.StatusCode, str]:
    metadata = [("authorization", f"Bearer {token}")] if token is not None else None
    try:
        reply = channel.unary_unary(method)(body.encode(), metadata=metadata, timeout=5)
    except grpc.RpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, reply.decode()


def token(subject: str, operator: bool = False) -> str:
    return mint_token(SETTINGS, subject=subject, operator=operator)


METHODS = ["/t.T/WhoAmI", "/t.T/WhoAmIAsync"]


@pytest.mark.parametrize("method", METHODS)
def test_no_token_is_unauthenticated(channel: grpc.Channel, method: str) -> None:
    code, message = call(channel, method, "2", None)
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "authorization: Bearer" in message


@pytest.mark.parametrize("method", METHODS)
def test_a_bad_token_is_unauthenticated(channel: grpc.Channel, method: str) -> None:
    forged = mint_token(AuthSettings(hs256_secret="f" * 40), subject="2")
    code, message = call(channel, method, "2", forged)
    assert (code, "signature does not verify" in message) == (grpc.StatusCode.UNAUTHENTICATED, True)


@pytest.mark.parametrize("method", METHODS)
def test_own_data_passes_and_the_servicer_sees_the_caller(
    channel: grpc.Channel, method: str
) -> None:
    assert call(channel, method, "2", token("2")) == (grpc.StatusCode.OK, "2")


@pytest.mark.parametrize("method", METHODS)
def test_another_users_data_is_permission_denied(channel: grpc.Channel, method: str) -> None:
    code, message = call(channel, method, "3", token("2"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert message == "user_id 3 is not you: your token acts for user 2 only"


@pytest.mark.parametrize("method", METHODS)
def test_every_user_needs_the_operator(channel: grpc.Channel, method: str) -> None:
    code, message = call(channel, method, "0", token("2"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert "operator scope" in message
    assert call(channel, method, "0", token("ops", operator=True)) == (grpc.StatusCode.OK, "ops")
    assert call(channel, method, "3", token("2", operator=True))[0] == grpc.StatusCode.OK


def test_operator_only_services(channel: grpc.Channel) -> None:
    code, message = call(channel, "/paysaga.admin.v1.Admin/WhoAmI", "2", token("2"))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert message == "paysaga.admin.v1.Admin needs the operator scope"
    operator = token("ops", operator=True)
    assert call(channel, "/paysaga.admin.v1.Admin/WhoAmI", "0", operator)[0] == grpc.StatusCode.OK


def test_health_is_open_and_reflection_is_not(channel: grpc.Channel) -> None:
    health = health_pb2_grpc.HealthStub(channel)
    health.Check(health_pb2.HealthCheckRequest(), timeout=5)  # no token, no error
    reflection = "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"
    code, _ = call(channel, reflection, "", None)
    assert code == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.parametrize(
    ("settings", "health_code", "whoami_code"),
    [
        # Health behind a token too.
        (
            SETTINGS.model_copy(update={"public_health": False}),
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
        ),
        # Auth off (loopback development): every call runs as the local caller, who may do all.
        (AuthSettings(enabled=False), "OK", "OK"),
    ],
)
def test_other_settings(settings: AuthSettings, health_code: str, whoami_code: str) -> None:
    app = _app(settings)
    app.start()
    try:
        with grpc.insecure_channel(app.address) as chan:
            try:
                health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=5)
                code = grpc.StatusCode.OK
            except grpc.RpcError as err:
                code = err.code()
            assert code.name == health_code
            assert call(chan, "/t.T/WhoAmI", "0", None)[0].name == whoami_code
    finally:
        app.stop()


def test_a_channel_with_a_token_sends_it_on_every_call(address: str) -> None:
    """security.tls.channel (the paysaga command's): PAYSAGA_TOKEN on a plaintext one."""
    with tls.channel(address, tls.TlsSettings(), token=token("2")) as with_token:
        assert with_token.unary_unary("/t.T/WhoAmI")(b"2", timeout=5) == b"2"


def test_every_token_error_in_public_key_mode_is_unauthenticated(tmp_path: Path) -> None:
    """An RSA server key: an ES256 token, an HS256 one, crafted ones all get UNAUTHENTICATED
    with a message that names no kind of key."""
    server_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "rsa.pub").write_bytes(
        server_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    settings = AuthSettings(enabled=True, public_key_file=str(tmp_path / "rsa.pub"))
    now = int(time.time())
    claims = {"sub": "2", "iss": "paysaga-dev", "aud": "paysaga", "iat": now, "exp": now + 600}
    tokens = {
        "es256": jwt.encode(claims, ec.generate_private_key(ec.SECP256R1()), algorithm="ES256"),
        "eddsa": jwt.encode(claims, ed25519.Ed25519PrivateKey.generate(), algorithm="EdDSA"),
        "hs256": jwt.encode(claims, "k" * 40, algorithm="HS256"),
        "crafted-kid": jwt.encode(claims, server_key, algorithm="RS256", headers={"kid": "x"})[:-4]
        + "AAAA",
        "forever": jwt.encode({**claims, "exp": 1e300}, server_key, algorithm="RS256"),
        "garbage": "a.b.c",
    }
    app = _app(settings)
    app.start()
    try:
        with grpc.insecure_channel(app.address) as chan:
            for name, forged in tokens.items():
                code, message = call(chan, "/t.T/WhoAmIAsync", "2", forged)
                assert code == grpc.StatusCode.UNAUTHENTICATED, (name, message)
                assert not any(word in message for word in ("RSA", "RS256", "Elliptic")), message
            good = jwt.encode(claims, server_key, algorithm="PS256")
            assert call(chan, "/t.T/WhoAmIAsync", "2", good) == (grpc.StatusCode.OK, "2")
    finally:
        app.stop()
