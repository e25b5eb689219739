"""Pytest plugin: `postgres_server`, a private real PostgreSQL for the whole test session."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deploy.postgres.install import PostgresNotFoundError, PostgresRuntimeError, find_bin_dir
from deploy.postgres.runtime import PostgresRuntime
from tests.support import free_port


def _require_postgres() -> Path:
    """The server binaries; in CI missing ones fail the run, elsewhere they skip loudly."""
    try:
        return find_bin_dir()
    except PostgresNotFoundError as exc:
        if os.environ.get("CI"):
            pytest.fail(str(exc), pytrace=False)
        pytest.skip(f"SKIPPED LOUDLY: {exc}")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresRuntime]:
    """A server on a free port with a temporary data folder, role and databases made; removed
    at the end.

    Tests may `.stop()`, `.kill()` and `.start()` it (same port, same data) but must leave it
    running. It never touches a server a user runs on 5432.
    """
    bin_dir = _require_postgres()
    # Not pytest's tmp_path: it is 0700 under root, and the server's account (postgres or
    # nobody, when the tests run as root) must be able to reach its data folder.
    home = Path(tempfile.mkdtemp(prefix="paysaga-pg-"))
    home.chmod(0o755)
    postgres = PostgresRuntime(
        port=free_port(),
        data_dir=home / "data",
        run_dir=home / "run",
        log_file=home / "postgres.log",
        bin_dir=bin_dir,
        detach=False,  # same process group: a Ctrl-C of pytest stops the server too
    )
    try:
        try:
            postgres.start()
            postgres.ensure_databases()
        except PostgresRuntimeError as exc:
            pytest.fail(f"could not start the test PostgreSQL: {exc}", pytrace=False)
        yield postgres
    finally:
        postgres.stop()
        shutil.rmtree(home, ignore_errors=True)


@pytest.fixture
def postgres_database(postgres_server: PostgresRuntime) -> Iterator[str]:
    """A new empty database owned by paysaga for one test: its SQLAlchemy URL; dropped after."""
    name = f"test_{uuid.uuid4().hex[:16]}"
    url = postgres_server.create_database(name)
    yield url
    postgres_server.drop_database(name)


@pytest.fixture(
    params=[pytest.param("sqlite"), pytest.param("postgres", marks=pytest.mark.postgres)]
)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each kind the services run on, for store tests written once.

    The SQLite case runs in the unit tier; the PostgreSQL case carries the `postgres` mark,
    which `make test-unit` leaves to `make test-integration` (it starts a real server).
    """
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/store.db"
    else:
        yield request.getfixturevalue("postgres_database")
