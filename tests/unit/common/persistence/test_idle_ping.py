"""PostgreSQL connections that sat idle are checked before use: a server that dropped them
(a restart, an idle timeout) costs no failed transaction, as SQLAlchemy's pre-ping did,
without a round trip on every checkout of a busy pool."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from services.common.persistence import kinds
from services.common.persistence.db import Database
from services.common.persistence.transaction import Transaction

pytestmark = [pytest.mark.unit, pytest.mark.postgres]


def drop_connections(url: str) -> int:
    """What a server restart does to the pool: every other connection to the database ends."""
    engine = create_engine(url, poolclass=NullPool)
    with engine.begin() as connection:
        ended = connection.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar_one()
    engine.dispose()
    return int(ended)


WRITES: dict[str, Callable[[Database], AbstractContextManager[Transaction]]] = {
    "orm-write": lambda db: db.write(),
    "core-write": lambda db: db.write_core(),
    "relay-bookkeeping": lambda db: db.write_core(durable=False),
}


@pytest.mark.parametrize("write", WRITES.values(), ids=WRITES.keys())
def test_connections_dropped_while_idle_are_replaced_before_use(
    postgres_database: str,
    monkeypatch: pytest.MonkeyPatch,
    write: Callable[[Database], AbstractContextManager[Transaction]],
) -> None:
    monkeypatch.setattr(kinds, "IDLE_PING_AFTER_S", 0.05)
    db = Database(postgres_database)
    try:
        with write(db) as session:
            session.execute(text("CREATE TABLE IF NOT EXISTS t (n int)"))
        with db.read() as session:
            session.execute(text("SELECT 1"))
        assert drop_connections(postgres_database) >= 1
        time.sleep(0.1)
        with write(db) as session:  # no error: the dead one was replaced
            session.execute(text("INSERT INTO t VALUES (1)"))
        with db.read() as session:
            assert session.execute(text("SELECT count(*) FROM t")).scalar_one() == 1
    finally:
        db.dispose()
