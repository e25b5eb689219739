"""BulkInsert stores exactly what SQLAlchemy's own INSERT stores, on each kind of database:
the hot tables' rows read back byte for byte alike, conflicts are ignored and the new rows'
keys returned, long batches split, and driver errors still arrive as SQLAlchemy's."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import Table, text
from sqlalchemy.exc import DBAPIError

from services.common.messaging import inbox
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import STEPS_TABLE, SagaStep
from services.common.messaging.outbox import OUTBOX_TABLE, OutboxRecord
from services.common.persistence import bulk
from services.common.persistence.bulk import BulkInsert, sqlite_time
from services.common.persistence.db import Database
from services.order.models import ORDERS_TABLE, Order
from services.payment.models import Payment, Transaction

PAYMENTS_TABLE: Table = Payment.__table__  # type: ignore[attr-defined]
TRANSACTIONS_TABLE: Table = Transaction.__table__  # type: ignore[attr-defined]

pytestmark = pytest.mark.unit

MOMENTS = [
    datetime(2026, 12, 5, 13, 0, 0, 0, tzinfo=UTC),  # no microseconds
    datetime(2026, 12, 5, 13, 0, 0, 123456, tzinfo=UTC),
    datetime(2026, 12, 5, 14, 30, 0, 5, tzinfo=timezone(timedelta(hours=2))),  # not UTC
    datetime(1, 1, 1, 0, 0, 0, tzinfo=UTC),  # year 1
]


def outbox_rows() -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"e{i}",
            "topic": "orders",
            "key": None if i == 0 else f"{i}".encode(),
            "value": bytes(range(256)) if i == 1 else b"",
            "headers": b"\x00\x01raw",
            "created_at": moment,
            "attempts": 0,
            "last_error": "",
        }
        for i, moment in enumerate(MOMENTS)
    ]


def step_rows() -> list[dict[str, Any]]:
    return [
        {
            "order_id": f"o{i}",
            "kind": "APPLIED" if i % 2 else "PRODUCED",
            "topic": "transactions",
            "kafka_partition": i if i % 2 else None,
            "kafka_offset": 2**40 + i if i % 2 else None,
            "event_id": f"e{i}",
            "event_type": "paysaga.v1.TransactionRecorded",
            "produced_at": moment if i % 2 else None,
            "recorded_at": moment,
            "replica": "order-0",
            "detail": "déjà vu ✓",
        }
        for i, moment in enumerate(MOMENTS)
    ]


def order_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": f"order-{i}",
            "user_id": 2**62 + i,
            "product_id": 3,
            "price_cents": 10000,
            "status": "CREATED",
            "failure_reason": "",
            "request_id": f"r{i}",
            "version": 1,
            "created_at": moment,
            "updated_at": moment,
        }
        for i, moment in enumerate(MOMENTS)
    ]


def payment_rows() -> list[dict[str, Any]]:
    return [
        {
            "order_id": f"order-{i}",
            "user_id": 2**62 + i,
            "amount_cents": 10000 + i,
            "approved": i % 2 == 0,
            "reason": "" if i % 2 == 0 else "insufficient funds: déjà vu ✓",
            "refunded_at": moment if i == 2 else None,
            "created_at": moment,
        }
        for i, moment in enumerate(MOMENTS)
    ]


def transaction_rows() -> list[dict[str, Any]]:
    return [
        {
            "id": f"t{i}",
            "order_id": f"order-{i}",
            "kind": "REFUND" if i % 2 else "CHARGE",
            "user_id": 2**62 + i,
            "amount_cents": 10000 + i,
            "created_at": moment,
        }
        for i, moment in enumerate(MOMENTS)
    ]


CASES = [
    (OutboxRecord, OUTBOX_TABLE, outbox_rows),
    (SagaStep, STEPS_TABLE, step_rows),
    (Order, ORDERS_TABLE, order_rows),
    (Payment, PAYMENTS_TABLE, payment_rows),
    (Transaction, TRANSACTIONS_TABLE, transaction_rows),
]


def stored(db: Database, table: Table, columns: list[str]) -> list[tuple[Any, ...]]:
    """Every row's `columns` as the database holds them (no SQLAlchemy type processing on
    the way out)."""
    named = ", ".join(f'"{c}"' for c in columns)
    with db.read() as session:
        result = session.connection().exec_driver_sql(f'SELECT {named} FROM "{table.name}"')
        return sorted(tuple(row) for row in result)


@pytest.mark.parametrize(("model", "table", "rows"), CASES, ids=lambda c: getattr(c, "name", ""))
def test_rows_are_stored_as_sqlalchemy_stores_them(
    store_url: str, postgres_or_sqlite_twin: str, model: Any, table: Table, rows: Any
) -> None:
    ours, theirs = Database(store_url), Database(postgres_or_sqlite_twin)
    for db in (ours, theirs):
        db.create_tables([model])
    columns = list(rows()[0])
    with ours.write() as session:
        BulkInsert(table, columns).execute(session, rows())
    with theirs.write() as session:
        session.execute(table.insert(), rows())
    assert stored(ours, table, columns) == stored(theirs, table, columns)
    with ours.read() as session:  # and SQLAlchemy reads them back as it wrote them
        found = session.execute(table.select()).mappings().all()
    assert [(r["created_at"] if "created_at" in r else r["recorded_at"]) for r in found] == [
        m.astimezone(UTC) for m in MOMENTS
    ]


def test_conflicts_are_ignored_and_the_new_keys_returned(store_url: str) -> None:
    db = Database(store_url)
    db.create_tables([ProcessedEvent])
    with db.write() as session:
        assert inbox.record_new(session, [("a", "orders"), ("b", "orders")]) == {"a", "b"}
    with db.write() as session:
        assert inbox.record_new(session, [("b", "orders"), ("c", "orders")]) == {"c"}


def test_a_long_batch_is_split_into_statements_the_database_takes(
    store_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(bulk, "_MAX_BINDS", 30)  # 10 rows of 3 values per statement
    db = Database(store_url)
    db.create_tables([ProcessedEvent])
    ids = [(f"e{i}", "orders") for i in range(95)]
    with db.write() as session:
        assert inbox.record_new(session, ids) == {i for i, _ in ids}
    with db.read() as session:
        count = session.connection().exec_driver_sql("SELECT count(*) FROM inbox").scalar()
    assert count == 95


def test_outbox_rows_take_their_seq_in_the_order_given(store_url: str) -> None:
    """Per-key order rests on it: the rows of one call are inserted in the order given."""
    db = Database(store_url)
    db.create_tables([OutboxRecord])
    rows = [{**outbox_rows()[1], "event_id": f"e{i:02}"} for i in (5, 3, 9, 0, 7, 1, 8, 2)]
    with db.write() as session:
        BulkInsert(OUTBOX_TABLE, list(rows[0])).execute(session, rows)
    with db.read() as session:
        found = session.execute(text("SELECT event_id FROM outbox ORDER BY seq")).scalars()
        assert list(found) == [row["event_id"] for row in rows]


def test_a_datetime_without_a_time_zone_is_refused(store_url: str) -> None:
    db = Database(store_url)
    db.create_tables([ProcessedEvent])
    naive = [{"event_id": "a", "topic": "orders", "processed_at": datetime(2026, 1, 1)}]
    insert = BulkInsert(ProcessedEvent.__table__, ["event_id", "topic", "processed_at"])  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="without a time zone"), db.write() as session:
        insert.execute(session, naive)


def test_a_driver_error_arrives_as_sqlalchemy_s(store_url: str) -> None:
    db = Database(store_url)
    db.create_tables([ProcessedEvent])
    insert = BulkInsert(ProcessedEvent.__table__, ["event_id", "topic", "processed_at"])  # type: ignore[attr-defined]
    row = {"event_id": "a", "topic": None, "processed_at": MOMENTS[0]}  # topic is NOT NULL
    with pytest.raises(DBAPIError), db.write() as session:
        insert.execute(session, [row])
    with db.read() as session:  # and the transaction was rolled back
        assert session.execute(text("SELECT count(*) FROM inbox")).scalar() == 0


def test_sqlite_time_is_sqlalchemy_s_text() -> None:
    assert sqlite_time(MOMENTS[0]) == "2026-12-05 13:00:00.000000"
    assert sqlite_time(MOMENTS[2]) == "2026-12-05 12:30:00.000005"
    assert sqlite_time(None) is None


@pytest.fixture
def postgres_or_sqlite_twin(store_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second empty database of the same kind as `store_url`."""
    if store_url.startswith("sqlite"):
        yield store_url.replace("store.db", "twin.db")
        return
    server = request.getfixturevalue("postgres_server")
    name = f"twin_{uuid.uuid4().hex[:16]}"
    yield server.create_database(name)
    server.drop_database(name)
