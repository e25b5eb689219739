"""The plaintext health-only port (`<SVC>_HEALTH_ADDRESS`): what Kubernetes' gRPC probes reach
while the service itself serves TLS. It answers every health name, follows liveness and
readiness through a drain, and serves nothing but health."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from pydantic_settings import SettingsConfigDict

from services.common.security.tls import SERVER_CERT, SERVER_KEY, TlsSettings, dev_secrets
from services.common.security.tls import server_credentials as tls_credentials
from services.common.serving.grpc_app import LIVENESS, AddressInUse, GrpcApp
from services.common.settings import ServiceSettings

pytestmark = pytest.mark.unit

SERVICE = "paysaga.test.Service"
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _app(credentials: grpc.ServerCredentials | None, health_address: str) -> GrpcApp:
    return GrpcApp(
        address="127.0.0.1:0",
        service_names=[SERVICE],
        register=lambda _server: None,
        workers=[],
        readiness_checks=[],
        drain_s=0,
        grace_s=1,
        credentials=credentials,
        health_address=health_address,
    )


def _status(port: int, name: str) -> health_pb2.HealthCheckResponse.ServingStatus.ValueType:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        request = health_pb2.HealthCheckRequest(service=name)
        return health_pb2_grpc.HealthStub(chan).Check(request, timeout=5).status


def _wait_for(port: int, name: str, status: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        request = health_pb2.HealthCheckRequest(service=name)
        for reply in health_pb2_grpc.HealthStub(chan).Watch(request, timeout=10):
            if reply.status == status:
                return
    raise AssertionError(f"{name!r} never became {status}")


@pytest.fixture
def tls_app(tmp_path: Path) -> Iterator[GrpcApp]:
    dev_secrets(tmp_path)
    tls = TlsSettings(cert_file=str(tmp_path / SERVER_CERT), key_file=str(tmp_path / SERVER_KEY))
    app = _app(tls_credentials(tls), "127.0.0.1:0")
    app.start()
    yield app
    app.stop()


def test_the_health_port_answers_in_plaintext_while_the_service_serves_tls(
    tls_app: GrpcApp,
) -> None:
    assert tls_app.health_port not in (0, tls_app.port)
    _wait_for(tls_app.health_port, SERVICE, SERVING)
    assert _status(tls_app.health_port, LIVENESS) == SERVING
    assert _status(tls_app.health_port, "") == SERVING
    with pytest.raises(grpc.RpcError) as refused:
        _status(tls_app.port, LIVENESS)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, "the service port is TLS only"


def test_the_health_port_serves_nothing_but_health(tls_app: GrpcApp) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{tls_app.health_port}") as chan:
        stub = reflection_pb2_grpc.ServerReflectionStub(chan)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        with pytest.raises(grpc.RpcError) as refused:
            list(stub.ServerReflectionInfo(iter([request]), timeout=5))
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_the_health_port_reports_not_serving_through_the_drain() -> None:
    app = _app(None, "127.0.0.1:0")
    app.drain_s = 2.0
    app.start()
    _wait_for(app.health_port, SERVICE, SERVING)
    stopping = threading.Thread(target=app.stop)
    stopping.start()
    try:
        _wait_for(app.health_port, SERVICE, NOT_SERVING)
        assert _status(app.health_port, LIVENESS) == NOT_SERVING
    finally:
        stopping.join(timeout=30)
    assert not stopping.is_alive()


def test_without_a_health_address_there_is_no_health_port() -> None:
    app = _app(None, "")
    try:
        assert app.health_server is None and app.health_port == 0
    finally:
        app.stop()


def test_a_taken_health_port_is_refused() -> None:
    first = _app(None, "127.0.0.1:0")
    try:
        with pytest.raises(AddressInUse, match="health"):
            _app(None, f"127.0.0.1:{first.health_port}")
    finally:
        first.stop()


def test_the_setting_is_read_per_service(monkeypatch: pytest.MonkeyPatch) -> None:
    class Settings(ServiceSettings):
        model_config = SettingsConfigDict(env_prefix="ORDER_")

    monkeypatch.setenv("ORDER_HEALTH_ADDRESS", "0.0.0.0:8081")
    assert Settings().health_address == "0.0.0.0:8081"
    assert ServiceSettings().health_address == "", "no health port unless asked for"
