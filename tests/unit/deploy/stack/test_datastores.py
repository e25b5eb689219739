"""A stack's layout check and its datastore per database kind (nothing is started)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deploy.postgres.runtime import PostgresRuntime
from deploy.stack.config import StackConfigError
from deploy.stack.datastores import (
    DATASTORES,
    DB_KINDS,
    PostgresDatastore,
    SqliteDatastore,
)
from deploy.stack.stack import Stack, check_layout

pytestmark = pytest.mark.unit


def test_every_database_kind_has_a_datastore() -> None:
    assert tuple(DATASTORES) == DB_KINDS


def test_layouts_that_cannot_work_are_refused() -> None:
    with pytest.raises(StackConfigError, match="choose DB=sqlite or DB=postgres"):
        check_layout("mysql", 1)
    with pytest.raises(StackConfigError, match="both must be 1 or more"):
        check_layout("postgres", 0)
    with pytest.raises(StackConfigError, match="both must be 1 or more"):
        check_layout("sqlite", 1, brokers=0)
    with pytest.raises(StackConfigError, match="REPLICAS=2 needs a database every replica"):
        check_layout("sqlite", 2)
    check_layout("sqlite", 1)
    check_layout("postgres", 3, brokers=3)


def test_sqlite_keeps_one_file_per_service_in_home(tmp_path: Path) -> None:
    stack = Stack(tmp_path, db="sqlite", kafka="127.0.0.1:9092")
    assert isinstance(stack.datastore, SqliteDatastore)
    assert stack.postgres is None
    assert stack.database_urls == {
        "order": f"sqlite:///{tmp_path.resolve()}/order.db",
        "payment": f"sqlite:///{tmp_path.resolve()}/payment.db",
    }
    assert stack.datastore.pids() == {}


def test_postgres_uses_a_given_server_and_leaves_it_alone(tmp_path: Path) -> None:
    server = PostgresRuntime(port=6543, data_dir=tmp_path / "pg", bin_dir=tmp_path)
    stack = Stack(tmp_path, db="postgres", replicas=2, kafka="127.0.0.1:9092", postgres=server)
    assert isinstance(stack.datastore, PostgresDatastore)
    assert stack.postgres is server and not stack.datastore.own
    assert stack.database_urls == {
        "order": "postgresql+psycopg://paysaga@127.0.0.1:6543/paysaga_order",
        "payment": "postgresql+psycopg://paysaga@127.0.0.1:6543/paysaga_payment",
    }
    stack.datastore.start()  # a given server is neither started ...
    stack.datastore.stop()  # ... nor stopped
    assert not server.is_running()


def test_postgres_without_a_server_makes_its_own_under_home(tmp_path: Path) -> None:
    stack = Stack(tmp_path, db="postgres", kafka="127.0.0.1:9092")
    assert isinstance(stack.datastore, PostgresDatastore) and stack.datastore.own
    assert stack.postgres is not None
    assert stack.postgres.data_dir == tmp_path.resolve() / "postgres"
    assert stack.postgres.log_file == tmp_path.resolve() / "log" / "postgres.log"
    assert stack.postgres.port == 5432


def test_given_urls_override_the_datastores(tmp_path: Path) -> None:
    urls = {"order": "sqlite:///a.db", "payment": "sqlite:///b.db"}
    stack = Stack(tmp_path, db="sqlite", kafka="127.0.0.1:9092", databases=urls)
    assert stack.database_urls == urls
    assert stack.process("payment").env["PAYMENT_DATABASE_URL"] == "sqlite:///b.db"
