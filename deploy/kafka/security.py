"""The local broker's SASL_SSL listener (`make kafka-up KAFKA_SECURITY=sasl_ssl`).

Clients (and the brokers between them) connect over TLS and log in with SCRAM-SHA-512. The
secrets are development ones, generated once into a folder (var/secrets by default) with the
development CA of services.common.security.tls: a broker certificate for 127.0.0.1/localhost in a
PKCS12 keystore, the broker's own SCRAM user and the services' user (`paysaga`) with random
passwords. The SCRAM users are written into the metadata when the storage is formatted
(`kafka-storage format --add-scram`), so they exist before the broker first starts. The
controller listener stays PLAINTEXT on loopback (it never leaves the machine).
"""

from __future__ import annotations

import datetime
import ipaddress
import secrets
from dataclasses import dataclass
from pathlib import Path

from services.common.security.tls import CA_CERT, CA_KEY, dev_secrets

MECHANISM = "SCRAM-SHA-512"
BROKER_USER = "broker"
CLIENT_USER = "paysaga"
KEYSTORE = "kafka-broker.p12"
KEYSTORE_PASSWORD = "kafka-keystore.password"
BROKER_PASSWORD = "kafka-broker.password"
CLIENT_PASSWORD = "kafka-paysaga.password"


def _secret_file(path: Path) -> str:
    if not path.exists():
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(24) + "\n")
    return path.read_text().strip()


def _broker_keystore(folder: Path, password: str) -> None:
    """A PKCS12 keystore: a broker certificate (127.0.0.1, localhost) signed by the dev CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import pkcs12
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate((folder / CA_CERT).read_bytes())
    ca_key = serialization.load_pem_private_key((folder / CA_KEY).read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paysaga kafka")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    data = pkcs12.serialize_key_and_certificates(
        b"kafka", key, cert, [ca_cert], serialization.BestAvailableEncryption(password.encode())
    )
    path = folder / KEYSTORE
    path.touch(mode=0o600)
    path.write_bytes(data)


@dataclass(frozen=True)
class KafkaSecurity:
    """A SASL_SSL (SCRAM-SHA-512) listener's secrets, all in one folder."""

    folder: Path

    @classmethod
    def dev(cls, folder: Path) -> KafkaSecurity:
        """The development secrets in `folder`, generated now if missing."""
        folder = Path(folder).resolve()
        dev_secrets(folder)
        password = _secret_file(folder / KEYSTORE_PASSWORD)
        if not (folder / KEYSTORE).exists():
            _broker_keystore(folder, password)
        _secret_file(folder / BROKER_PASSWORD)
        _secret_file(folder / CLIENT_PASSWORD)
        return cls(folder)

    def _read(self, name: str) -> str:
        return (self.folder / name).read_text().strip()

    @property
    def client_password(self) -> str:
        return self._read(CLIENT_PASSWORD)

    def format_args(self) -> list[str]:
        """kafka-storage format arguments creating both SCRAM users."""
        return [
            arg
            for user, password in (
                (BROKER_USER, self._read(BROKER_PASSWORD)),
                (CLIENT_USER, self.client_password),
            )
            for arg in ("--add-scram", f"{MECHANISM}=[name={user},password={password}]")
        ]

    def server_properties(self) -> str:
        """Broker settings for the SASL_SSL listener (appended to server.properties)."""
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{BROKER_USER}" password="{self._read(BROKER_PASSWORD)}";'
        )
        keystore_password = self._read(KEYSTORE_PASSWORD)
        return "\n".join(
            [
                "# SASL_SSL listener: TLS (development CA) and SCRAM-SHA-512 logins",
                f"sasl.enabled.mechanisms={MECHANISM}",
                f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
                f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config={jaas}",
                "ssl.keystore.type=PKCS12",
                f"ssl.keystore.location={self.folder / KEYSTORE}",
                f"ssl.keystore.password={keystore_password}",
                f"ssl.key.password={keystore_password}",
                "ssl.truststore.type=PEM",
                f"ssl.truststore.location={self.folder / CA_CERT}",
                "",
            ]
        )

    def client_config(self, password: str | None = None) -> dict[str, str]:
        """librdkafka settings of the `paysaga` user (`password`: another one, for tests)."""
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": MECHANISM,
            "sasl.username": CLIENT_USER,
            "sasl.password": self.client_password if password is None else password,
            "ssl.ca.location": str(self.folder / CA_CERT),
        }

    def client_env(self) -> dict[str, str]:
        """The same as KAFKA_* environment variables (read by services.common.messaging.kafka)."""
        return {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": MECHANISM,
            "KAFKA_SASL_USERNAME": CLIENT_USER,
            "KAFKA_SASL_PASSWORD_FILE": str(self.folder / CLIENT_PASSWORD),
            "KAFKA_SSL_CA_LOCATION": str(self.folder / CA_CERT),
        }
