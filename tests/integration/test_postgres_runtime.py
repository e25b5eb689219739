"""The local PostgreSQL runtime: role and databases, loopback-only trust, restarts, clear errors."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from deploy.postgres.cli import main
from deploy.postgres.install import PortInUseError
from deploy.postgres.runtime import PostgresRuntime

pytestmark = pytest.mark.integration


def scalar(url: str, sql: str) -> object:
    """One value, read as the role in the URL (a new connection each time: no pool)."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(sql)).scalar_one()
    finally:
        engine.dispose()


def test_role_and_databases_exist(postgres_server: PostgresRuntime) -> None:
    role = postgres_server.query(
        "SELECT rolname, rolcanlogin, rolsuper FROM pg_roles WHERE rolname = 'paysaga'"
    )
    assert role == "paysaga|t|f"  # logs in, and is no superuser
    owners = postgres_server.query(
        "SELECT datname, pg_get_userbyid(datdba) FROM pg_database "
        "WHERE datname IN ('paysaga_order', 'paysaga_payment') ORDER BY datname"
    )
    assert owners.splitlines() == ["paysaga_order|paysaga", "paysaga_payment|paysaga"]


def test_ensuring_them_again_creates_nothing(postgres_server: PostgresRuntime) -> None:
    assert postgres_server.ensure_databases() == []


@pytest.mark.parametrize("database", ["order", "payment"])
def test_paysaga_connects_over_loopback_without_a_password(
    postgres_server: PostgresRuntime, database: str
) -> None:
    url = postgres_server.url(database)
    assert (
        url == f"postgresql+psycopg://paysaga@127.0.0.1:{postgres_server.port}/paysaga_{database}"
    )
    assert scalar(url, "SELECT current_user || '@' || current_database()") == (
        f"paysaga@paysaga_{database}"
    )


def test_listens_on_loopback_and_trusts_loopback_only(postgres_server: PostgresRuntime) -> None:
    rules = postgres_server.query(
        "SELECT type, database, user_name, address, auth_method FROM pg_hba_file_rules"
    )
    assert rules.splitlines() == [
        "host|{all}|{all}|127.0.0.1|trust",
        "host|{all}|{all}|::1|trust",
    ]
    settings = postgres_server.query(
        "SELECT name, setting, unit FROM pg_settings WHERE name IN ('listen_addresses', "
        "'unix_socket_directories', 'max_connections', 'shared_buffers', 'fsync') ORDER BY name"
    )
    assert settings.splitlines() == [
        "fsync|on|",
        "listen_addresses|127.0.0.1|",
        "max_connections|200|",
        "shared_buffers|16384|8kB",  # 128MB
        "unix_socket_directories||",
    ]


def test_start_when_running_is_a_no_op(postgres_server: PostgresRuntime) -> None:
    pid = postgres_server.pid()
    assert pid is not None
    assert postgres_server.start() == pid


def test_a_fresh_database_is_empty_and_owned_by_paysaga(postgres_database: str) -> None:
    tables = "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
    assert scalar(postgres_database, tables) == 0
    owner = "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
    assert scalar(postgres_database, owner) == "paysaga"


@pytest.mark.parametrize("crash", [False, True], ids=["stop", "kill"])
def test_data_committed_before_a_restart_is_there_after(
    postgres_server: PostgresRuntime, postgres_database: str, crash: bool
) -> None:
    engine = sa.create_engine(postgres_database, poolclass=NullPool)
    with engine.begin() as connection:
        connection.execute(sa.text("CREATE TABLE money (cents bigint)"))
        connection.execute(sa.text("INSERT INTO money VALUES (5000)"))
    try:
        assert postgres_server.kill() if crash else postgres_server.stop()
        assert not postgres_server.is_running()
    finally:
        postgres_server.start()  # the session server must be up for the tests after this one
    assert scalar(postgres_database, "SELECT sum(cents) FROM money") == 5000


def test_a_second_server_on_a_busy_port_is_refused_at_once(
    postgres_server: PostgresRuntime, tmp_path: Path
) -> None:
    port = postgres_server.port
    second = PostgresRuntime(port=port, data_dir=tmp_path / "data", run_dir=tmp_path)
    message = rf"127\.0\.0\.1:{port} is already in use .*\(PG_PORT\)"
    with pytest.raises(PortInUseError, match=message):
        second.start()
    assert not (tmp_path / "data").exists()  # refused before touching anything


def test_any_taken_port_is_reported_too(tmp_path: Path) -> None:
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        port = squatter.getsockname()[1]
        postgres = PostgresRuntime(port=port, data_dir=tmp_path / "data", run_dir=tmp_path)
        with pytest.raises(PortInUseError, match=f"127.0.0.1:{port} is already in use"):
            postgres.start()


def test_the_command_line_prints_a_service_url(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PG_PORT", "6543")
    assert main(["url", "payment"]) == 0
    assert (
        capsys.readouterr().out == "postgresql+psycopg://paysaga@127.0.0.1:6543/paysaga_payment\n"
    )
