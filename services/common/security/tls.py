"""TLS for gRPC: server credentials from files, optional client certificates (mTLS), client
channels, and a development CA with its certificates (`python -m services.common.security.tls dev`).

Server side (PAYSAGA_TLS_*): CERT_FILE + KEY_FILE turn TLS on; CLIENT_CA_FILE additionally
requires every client to present a certificate signed by that CA (mTLS: service-to-service
or operator access). Client side: CA_FILE verifies the server; CLIENT_CERT_FILE +
CLIENT_KEY_FILE present a certificate when the server asks for one.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import grpc
from pydantic_settings import BaseSettings, SettingsConfigDict


class TlsSettings(BaseSettings):
    """PAYSAGA_TLS_* settings, shared by both services and their clients (tools, tests)."""

    model_config = SettingsConfigDict(env_prefix="PAYSAGA_TLS_", extra="ignore")

    #: The server's certificate chain and private key (PEM): set both to serve TLS.
    cert_file: str = ""
    key_file: str = ""
    #: Require client certificates signed by this CA (mTLS).
    client_ca_file: str = ""
    #: Clients: the CA that signed the servers' certificates.
    ca_file: str = ""
    #: Clients: a certificate to present to servers that require one (mTLS).
    client_cert_file: str = ""
    client_key_file: str = ""

    @property
    def enabled(self) -> bool:
        return bool(self.cert_file or self.key_file)


class TlsConfigError(ValueError):
    """TLS settings that cannot work; the message says which one to fix."""


def server_credentials(settings: TlsSettings) -> grpc.ServerCredentials | None:
    """The server's TLS credentials; None when TLS is off."""
    if not settings.enabled:
        return None
    if not (settings.cert_file and settings.key_file):
        raise TlsConfigError("set both PAYSAGA_TLS_CERT_FILE and PAYSAGA_TLS_KEY_FILE, or neither")
    try:
        pair = (Path(settings.key_file).read_bytes(), Path(settings.cert_file).read_bytes())
        client_ca = Path(settings.client_ca_file).read_bytes() if settings.client_ca_file else None
    except OSError as exc:
        raise TlsConfigError(f"cannot read a TLS file: {exc}") from exc
    return grpc.ssl_server_credentials(
        [pair], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def channel_credentials(settings: TlsSettings) -> grpc.ChannelCredentials | None:
    """Client credentials for a TLS server (CA_FILE set); None: plaintext."""
    if not settings.ca_file:
        return None
    cert = Path(settings.client_cert_file).read_bytes() if settings.client_cert_file else None
    key = Path(settings.client_key_file).read_bytes() if settings.client_key_file else None
    return grpc.ssl_channel_credentials(Path(settings.ca_file).read_bytes(), key, cert)


class _BearerToken(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):
    """Adds `authorization: Bearer <token>` to every call (a plaintext loopback channel)."""

    def __init__(self, token: str) -> None:
        self.header = ("authorization", f"Bearer {token}")

    def _with_token(self, details: Any) -> Any:
        return details._replace(metadata=[*(details.metadata or ()), self.header])

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Any) -> Any:
        return continuation(self._with_token(details), request)


def is_loopback(address: str) -> bool:
    """`127.0.0.1:50051`, `localhost:50051`, `[::1]:50051`: True; `0.0.0.0:50051`: False."""
    host = address.rsplit(":", 1)[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def channel(
    address: str, settings: TlsSettings | None = None, token: str | None = None
) -> grpc.Channel:
    """A channel to `address`: TLS when the settings (default: PAYSAGA_TLS_*) name a CA,
    plaintext otherwise; with `token` (default: PAYSAGA_TOKEN), every call carries it."""
    credentials = channel_credentials(settings or TlsSettings())
    token = token if token is not None else os.environ.get("PAYSAGA_TOKEN", "")
    if credentials is None:
        if token and not is_loopback(address):
            raise ValueError(
                f"refusing to send a bearer token in clear text to {address}: set "
                "PAYSAGA_TLS_CA_FILE to the CA of the services' certificates"
            )
        plain = grpc.insecure_channel(address)
        return grpc.intercept_channel(plain, _BearerToken(token)) if token else plain
    if token:
        credentials = grpc.composite_channel_credentials(
            credentials, grpc.access_token_call_credentials(token)
        )
    return grpc.secure_channel(address, credentials)


# -- development CA -------------------------------------------------------------------------

#: Files `dev_secrets` writes into its folder.
CA_CERT, CA_KEY = "ca.pem", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"
CLIENT_CERT, CLIENT_KEY = "client.pem", "client.key"
JWT_SECRET = "jwt-hs256.secret"


def _write_private(path: Path, data: bytes) -> None:
    path.touch(mode=0o600, exist_ok=True)
    path.chmod(0o600)
    path.write_bytes(data)


def dev_secrets(folder: Path, hosts: tuple[str, ...] = ("localhost",)) -> list[Path]:
    """A development CA, a server certificate (localhost, 127.0.0.1, ::1 and `hosts`), a
    client certificate (mTLS) and an HS256 secret in `folder`; files already there are kept.

    Returns the files written now. Never for production: the CA key lies next to them.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)
    written: list[Path] = []
    if not (folder / JWT_SECRET).exists():
        _write_private(folder / JWT_SECRET, secrets.token_urlsafe(48).encode() + b"\n")
        written.append(folder / JWT_SECRET)
    if (folder / CA_CERT).exists() and (folder / SERVER_CERT).exists():
        return written

    def pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
        return key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "paysaga development CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )

    def leaf(
        name: str, usage: x509.ObjectIdentifier, sans: list[x509.GeneralName]
    ) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                critical=False,
            )
        )
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(ca_key, hashes.SHA256())
        return cert.public_bytes(serialization.Encoding.PEM), pem_key(key)

    names: list[x509.GeneralName] = []
    for host in ("localhost", "127.0.0.1", "::1", *hosts):
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    unique = list(dict.fromkeys(names))
    server_cert, server_key = leaf("paysaga server", ExtendedKeyUsageOID.SERVER_AUTH, unique)
    client_cert, client_key = leaf("paysaga operator", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    files = {
        CA_CERT: ca_cert.public_bytes(serialization.Encoding.PEM),
        SERVER_CERT: server_cert,
        CLIENT_CERT: client_cert,
    }
    for name, data in files.items():
        (folder / name).write_bytes(data)
        written.append(folder / name)
    for name, data in {
        CA_KEY: pem_key(ca_key),
        SERVER_KEY: server_key,
        CLIENT_KEY: client_key,
    }.items():
        _write_private(folder / name, data)
        written.append(folder / name)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.common.security.tls",
        description="Development secrets: a CA, server and client certificates, a JWT secret.",
    )
    parser.add_argument("command", choices=["dev"])
    parser.add_argument("--dir", default="var/secrets", help="where (default var/secrets)")
    parser.add_argument("--host", action="append", default=[], help="another server name")
    parser.add_argument("--quiet", action="store_true", help="say nothing if all is there")
    args = parser.parse_args(argv)
    written = dev_secrets(Path(args.dir), tuple(args.host))
    for path in written:
        sys.stdout.write(f"==> wrote {path}\n")
    if not written and not args.quiet:
        sys.stdout.write(f"==> development secrets already in {args.dir}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
