"""What a relay's claim reads of an outbox row is the row as written, on each database.

SQLite's claim reads through the sqlite3 driver, not SQLAlchemy (services.common.messaging
.claims): its rows must come back as SQLAlchemy would read them, time zone included.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from sqlmodel import select

from services.common.messaging.claims import claims_for
from services.common.messaging.outbox import ClaimedRow, OutboxRecord
from services.common.persistence.db import Database

pytestmark = pytest.mark.unit

WRITTEN = [
    OutboxRecord(event_id="e-1", topic="orders", key=b"k\x00\xff", value=b"\x00v", headers=b""),
    OutboxRecord(event_id="e-2", topic="payments", key=None, value=None, headers=b"\x01h"),
    OutboxRecord(event_id="e-3", topic="orders", key=b"k", value=b"", headers=b"", attempts=2),
]


def test_a_claim_reads_each_row_as_sqlalchemy_does(store_url: str) -> None:
    db = Database(store_url)
    db.create_tables([OutboxRecord])
    try:
        with db.write() as session:
            for record in WRITTEN:
                session.add(OutboxRecord.model_validate(record))
        with db.read() as session:
            expected = [
                ClaimedRow(*(getattr(r, name) for name in ClaimedRow._fields))
                for r in session.exec(select(OutboxRecord).order_by(OutboxRecord.seq)).all()  # type: ignore[arg-type]
            ]

        claimed = claims_for(db).claim(10)

        assert claimed == expected
        assert [row.event_id for row in claimed] == ["e-1", "e-2", "e-3"]
        for row in claimed:
            assert row.created_at.tzinfo is not None
            assert abs(row.created_at - datetime.now(UTC)) < timedelta(minutes=1)
        assert claimed[0].key == b"k\x00\xff" and claimed[1].key is None
        assert claimed[2].attempts == 2
    finally:
        db.dispose()


def test_sqlite_claims_read_on_after_the_last_row_claimed(tmp_path: object) -> None:
    db = Database(f"sqlite:///{tmp_path}/store.db")
    db.create_tables([OutboxRecord])
    try:
        claims = claims_for(db)
        with db.write() as session:
            session.add(OutboxRecord(event_id="first", topic="orders", headers=b""))
        assert [row.event_id for row in claims.claim(10)] == ["first"]
        assert claims.claim(10) == []  # committed rows only once
        with db.write() as session:
            session.add(OutboxRecord(event_id="second", topic="orders", headers=b""))
        assert [row.event_id for row in claims.claim(10)] == ["second"]  # a fresh read
    finally:
        db.dispose()


def test_the_driver_connection_is_for_sqlite_only() -> None:
    db = Database("postgresql+psycopg://paysaga@127.0.0.1:1/none")
    with pytest.raises(TypeError, match="SQLite"), db.driver_connection():
        pass


def test_a_driver_error_reaches_the_relay_and_the_next_claim_works(tmp_path: object) -> None:
    db = Database(f"sqlite:///{tmp_path}/store.db")
    try:
        claims = claims_for(db)
        with pytest.raises(sqlite3.OperationalError, match="no such table"):
            claims.claim(10)  # the relay logs it and tries again
        db.create_tables([OutboxRecord])
        with db.write() as session:
            session.add(OutboxRecord(event_id="after", topic="orders", headers=b""))
        assert [row.event_id for row in claims.claim(10)] == ["after"]
    finally:
        db.dispose()
