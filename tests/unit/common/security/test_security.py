"""Secure by default off loopback; TLS and mTLS with the development CA on an in-process server."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.security import authz
from services.common.security.auth_settings import AuthSettings
from services.common.security.policy import InsecureStart, PolicySettings, Security, is_loopback
from services.common.security.tls import (
    CA_CERT,
    CLIENT_CERT,
    CLIENT_KEY,
    SERVER_CERT,
    SERVER_KEY,
    TlsSettings,
    channel,
    dev_secrets,
    server_credentials,
)
from services.common.serving.grpc_app import GrpcApp

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        ("127.0.0.1:50051", True),
        ("localhost:50051", True),
        ("[::1]:50051", True),
        ("127.0.0.2:1", True),
        ("0.0.0.0:50051", False),
        ("[::]:50051", False),
        ("10.1.2.3:50051", False),
        ("orders.internal:50051", False),
    ],
)
def test_is_loopback(address: str, loopback: bool) -> None:
    assert is_loopback(address) is loopback


def _security(auth: bool, tls: bool, insecure: bool = False) -> Security:
    return Security(
        auth=AuthSettings(enabled=auth),
        tls=TlsSettings(cert_file="c.pem" if tls else "", key_file="k.pem" if tls else ""),
        policy=PolicySettings(insecure=insecure),
    )


def test_off_loopback_without_tls_and_auth_refuses_to_start() -> None:
    with pytest.raises(InsecureStart, match="without TLS and authentication") as err:
        _security(auth=False, tls=False).check_address("0.0.0.0:50051")
    assert "PAYSAGA_INSECURE=1" in str(err.value)
    with pytest.raises(InsecureStart, match="without authentication"):
        _security(auth=False, tls=True).check_address("0.0.0.0:50051")
    with pytest.raises(InsecureStart, match="without TLS"):
        _security(auth=True, tls=False).check_address("0.0.0.0:50051")
    _security(auth=True, tls=True).check_address("0.0.0.0:50051")


def test_insecure_and_loopback_start_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        _security(auth=False, tls=False, insecure=True).check_address("0.0.0.0:50051")
        _security(auth=False, tls=False).check_address("127.0.0.1:50051")
    messages = [r.getMessage() for r in caplog.records]
    assert any("because PAYSAGA_INSECURE=1" in m for m in messages)
    assert any("on loopback 127.0.0.1:50051 without TLS and authentication" in m for m in messages)


def test_authz_outside_an_authenticated_call_refuses() -> None:
    with pytest.raises(authz.PermissionDenied, match="no authenticated caller"):
        authz.require_user(1)
    with pytest.raises(authz.PermissionDenied):
        authz.may_see(1)


@pytest.fixture(scope="module")
def secrets(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("secrets")
    written = dev_secrets(folder)
    assert len(written) == 7
    assert (folder / SERVER_KEY).stat().st_mode & 0o077 == 0, "private keys are private"
    assert dev_secrets(folder) == [], "a second run keeps what is there"
    return folder


def _serve(credentials: grpc.ServerCredentials | None) -> GrpcApp:
    app = GrpcApp(
        address="127.0.0.1:0",
        service_names=[],
        register=lambda _server: None,
        workers=[],
        readiness_checks=[],
        drain_s=0,
        credentials=credentials,
    )
    app.start()
    return app


def _health(chan: grpc.Channel) -> grpc.StatusCode:
    try:
        health_pb2_grpc.HealthStub(chan).Check(health_pb2.HealthCheckRequest(), timeout=5)
    except grpc.RpcError as err:
        return err.code()
    return grpc.StatusCode.OK


@pytest.fixture(scope="module")
def tls_app(secrets: Path) -> Iterator[GrpcApp]:
    tls = TlsSettings(cert_file=str(secrets / SERVER_CERT), key_file=str(secrets / SERVER_KEY))
    app = _serve(server_credentials(tls))
    yield app
    app.stop()


def test_tls_with_the_dev_ca(tls_app: GrpcApp, secrets: Path) -> None:
    with channel(tls_app.address, TlsSettings(ca_file=str(secrets / CA_CERT))) as chan:
        assert _health(chan) == grpc.StatusCode.OK
    with channel(tls_app.address, TlsSettings()) as plaintext:
        assert _health(plaintext) == grpc.StatusCode.UNAVAILABLE


def test_tls_with_another_ca_is_refused(tls_app: GrpcApp, tmp_path: Path) -> None:
    dev_secrets(tmp_path)
    with channel(tls_app.address, TlsSettings(ca_file=str(tmp_path / CA_CERT))) as chan:
        assert _health(chan) == grpc.StatusCode.UNAVAILABLE


def test_mtls_needs_a_client_certificate(secrets: Path) -> None:
    tls = TlsSettings(
        cert_file=str(secrets / SERVER_CERT),
        key_file=str(secrets / SERVER_KEY),
        client_ca_file=str(secrets / CA_CERT),
    )
    app = _serve(server_credentials(tls))
    try:
        ca_only = TlsSettings(ca_file=str(secrets / CA_CERT))
        with channel(app.address, ca_only) as chan:
            assert _health(chan) == grpc.StatusCode.UNAVAILABLE
        with_cert = ca_only.model_copy(
            update={
                "client_cert_file": str(secrets / CLIENT_CERT),
                "client_key_file": str(secrets / CLIENT_KEY),
            }
        )
        with channel(app.address, with_cert) as chan:
            assert _health(chan) == grpc.StatusCode.OK
    finally:
        app.stop()
