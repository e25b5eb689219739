"""Kafka security settings pass through the environment to every client the services make."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.common.messaging.kafka import client_overrides, consumer_config, producer_config

pytestmark = pytest.mark.unit


def test_named_and_generic_settings(tmp_path: Path) -> None:
    (tmp_path / "password").write_text("s3cret\n")
    env = {
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "KAFKA_SASL_USERNAME": "paysaga",
        "KAFKA_SASL_PASSWORD_FILE": str(tmp_path / "password"),
        "KAFKA_SSL_CA_LOCATION": "/etc/ca.pem",
        "KAFKA_CONFIG_SSL_ENDPOINT_IDENTIFICATION_ALGORITHM": "none",
        "KAFKA_CONFIG_SASL_OAUTHBEARER_METHOD": "oidc",
        "KAFKA_CONFIG_": "ignored: no name",
        "KAFKA_SSL_KEY_PASSWORD": "",  # empty: not set
        "KAFKA_BOOTSTRAP_SERVERS": "not a client property",
        "KAFKA_PORT": "9092",
    }
    assert client_overrides(env) == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "paysaga",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ca.pem",
        "ssl.endpoint.identification.algorithm": "none",
        "sasl.oauthbearer.method": "oidc",
    }


def test_every_client_config_carries_them_but_never_loses_its_guarantees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    monkeypatch.setenv("KAFKA_CONFIG_ENABLE_IDEMPOTENCE", "false")
    monkeypatch.setenv("KAFKA_CONFIG_ENABLE_AUTO_OFFSET_STORE", "true")
    producer = producer_config("b:9092", "p")
    consumer = consumer_config("b:9092", "g", "c")
    assert producer["security.protocol"] == consumer["security.protocol"] == "SASL_SSL"
    assert producer["enable.idempotence"] is True
    # Offsets are stored by the application only, after its database commit.
    assert consumer["enable.auto.offset.store"] is False
