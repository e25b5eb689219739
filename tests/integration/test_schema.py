"""Migrations on both database kinds: BIGINT for every int64, the outbox's storage settings on
PostgreSQL, idempotent and concurrent-safe."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, inspect, text

from deploy.postgres.runtime import PostgresRuntime
from deploy.stack.config import ROOT
from services.common.messaging.outbox_schema import OUTBOX_STORAGE
from services.common.persistence.db import Database
from services.common.persistence.migrate import SchemaNotCurrent, check_schema, migrate
from services.order.__main__ import MIGRATIONS as ORDER_MIGRATIONS
from services.order.store import seed_catalogue
from services.payment.__main__ import MIGRATIONS as PAYMENT_MIGRATIONS
from services.payment.models import Account
from services.payment.store import seed_accounts

pytestmark = pytest.mark.integration

#: Every column that holds an int64 of the contract.
INT64_COLUMNS = {
    "order": {
        ("orders", "user_id"), ("orders", "product_id"), ("orders", "price_cents"),
        ("product", "id"), ("product", "price_cents"), ("outbox", "seq"),
        ("outbox_parked", "seq"),
    },
    "payment": {
        ("account", "user_id"), ("account", "balance_cents"), ("payment", "user_id"),
        ("payment", "amount_cents"), ("transaction", "user_id"),
        ("transaction", "amount_cents"), ("outbox", "seq"), ("outbox_parked", "seq"),
    },
}  # fmt: skip

MIGRATIONS = {"order": ORDER_MIGRATIONS, "payment": PAYMENT_MIGRATIONS}


def test_every_int64_is_a_bigint_on_postgresql(postgres_server: PostgresRuntime) -> None:
    for service, columns in INT64_COLUMNS.items():
        url = postgres_server.create_database()
        migrate(url, MIGRATIONS[service])
        engine = create_engine(url)
        found = inspect(engine)
        for table, column in columns:
            [kind] = [c["type"] for c in found.get_columns(table) if c["name"] == column]
            assert str(kind) == "BIGINT", f"{service}: {table}.{column} is {kind}"
        engine.dispose()


def test_the_outbox_is_stored_as_a_queue_table_on_postgresql(
    postgres_server: PostgresRuntime,
) -> None:
    assert "fillfactor=50" in OUTBOX_OPTIONS
    for service, migrations in MIGRATIONS.items():
        url = postgres_server.create_database()
        migrate(url, migrations)
        assert outbox_options(url) == OUTBOX_OPTIONS, service


def test_the_outbox_storage_step_goes_back_and_forth(postgres_server: PostgresRuntime) -> None:
    """Its downgrade gives PostgreSQL's defaults back, and migrate sets them again."""
    url = postgres_server.create_database()
    migrate(url, ORDER_MIGRATIONS)
    config = Config()
    config.set_main_option("script_location", str(ORDER_MIGRATIONS))
    engine = create_engine(url)
    with engine.connect() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "0005_outbox_claims")
        connection.commit()
    engine.dispose()
    assert outbox_options(url) is None
    assert migrate(url, ORDER_MIGRATIONS) == "0006_outbox_storage"
    assert outbox_options(url) == OUTBOX_OPTIONS


#: What pg_class.reloptions holds for the outbox once migrated, sorted.
OUTBOX_OPTIONS = sorted(f"{name}={value}" for name, value in OUTBOX_STORAGE.items())


def outbox_options(url: str) -> list[str] | None:
    """The outbox's storage settings on the database at `url`, sorted (None: the defaults)."""
    engine = create_engine(url)
    with engine.connect() as connection:
        found = connection.execute(
            text("SELECT reloptions FROM pg_class WHERE relname = 'outbox'")
        ).scalar_one()
    engine.dispose()
    return None if found is None else sorted(found)


def test_a_big_int64_round_trips(postgres_server: PostgresRuntime) -> None:
    url = postgres_server.create_database()
    migrate(url, PAYMENT_MIGRATIONS)
    db = Database(url)
    with db.write() as session:
        session.add(Account(user_id=2**62, balance_cents=2**62 + 1))
    with db.read() as session:
        assert session.get(Account, 2**62).balance_cents == 2**62 + 1  # type: ignore[union-attr]
    db.dispose()


def test_concurrent_migrations_and_seeds_are_safe(postgres_server: PostgresRuntime) -> None:
    url = postgres_server.create_database()
    with ThreadPoolExecutor(max_workers=4) as pool:
        revisions = list(pool.map(lambda _: migrate(url, ORDER_MIGRATIONS), range(4)))
    assert len(set(revisions)) == 1
    db = Database(url)
    with ThreadPoolExecutor(max_workers=4) as pool:
        added = list(pool.map(lambda _: seed_catalogue(db), range(4)))
    assert sum(added) == 5
    db.dispose()


def test_sqlite_migrates_and_seeds_idempotently(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/payment.db"
    assert migrate(url, PAYMENT_MIGRATIONS) == migrate(url, PAYMENT_MIGRATIONS)
    db = Database(url)
    assert (seed_accounts(db), seed_accounts(db)) == (5, 0)
    db.dispose()


def test_a_service_refuses_an_unmigrated_database(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/order.db"
    with pytest.raises(SchemaNotCurrent, match="run `python -m services.order migrate`"):
        check_schema(url, ORDER_MIGRATIONS, "order")
    done = subprocess.run(
        [sys.executable, "-m", "services.order"],
        cwd=ROOT,
        env={"ORDER_DATABASE_URL": url, "PYTHONPATH": f"{ROOT}:{ROOT / 'gen'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "python -m services.order migrate" in done.stderr
