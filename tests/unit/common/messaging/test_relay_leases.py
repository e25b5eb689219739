"""PostgreSQL leases (SQLite rows are not leased: one relay per database file): a relay
settles only the rows it still holds."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlmodel import select

from services.common.messaging.delivery import Failure
from services.common.messaging.journal import TABLES as JOURNAL_TABLES
from services.common.messaging.outbox import ClaimedRow, OutboxRecord, ParkedRecord
from services.common.persistence.db import Database
from tests.unit.common.messaging.test_relay import (
    FakeProducer,
    parked,
    relay_of,
    remaining,
    stage,
)

pytestmark = [pytest.mark.unit, pytest.mark.postgres]


@pytest.fixture
def pg(postgres_database: str) -> Database:
    database = Database(postgres_database)
    database.create_tables([OutboxRecord, ParkedRecord, *JOURNAL_TABLES])
    return database


def leases(db: Database) -> list[tuple[int, str | None]]:
    with db.read() as session:
        found = session.execute(text("SELECT seq, claimed_by FROM outbox ORDER BY seq"))
        return [(int(seq), holder) for seq, holder in found]


@pytest.mark.parametrize(
    "failure",
    [
        Failure("gone for good", permanent=True, counts=True),
        Failure("try later", permanent=False, counts=True),
    ],
    ids=["park", "retry"],
)
def test_a_relay_whose_lease_was_taken_over_leaves_the_row_to_its_holder(
    pg: Database, failure: Failure
) -> None:
    relay = relay_of(pg, FakeProducer())
    stage(pg, "a")
    rows = relay.claims.claim(10)
    assert [r.seq for r in rows] == [seq for seq, _ in leases(pg)]
    with pg.write() as session:  # its lease ran out and another relay took the row over
        session.execute(text("UPDATE outbox SET claimed_by = 'another-relay'"))
    settled = relay.claims.settle(relay, rows, {rows[0].seq: failure})
    assert leases(pg) == [(rows[0].seq, "another-relay")]
    assert parked(pg) == [] and remaining(pg) == 1
    assert settled == (1, 0)  # nothing of it left to this relay
    pg.dispose()


def test_a_claimed_row_reads_back_as_the_outbox_holds_it(pg: Database) -> None:
    # The claim runs on the driver's cursor (Prepared): its columns converted as the ORM's.
    stage(pg, "a")
    with pg.read() as session:
        stored = session.exec(select(OutboxRecord)).one()
    (row,) = relay_of(pg, FakeProducer()).claims.claim(10)
    assert row == ClaimedRow(*(getattr(stored, name) for name in ClaimedRow._fields))
    assert isinstance(row.value, bytes) and isinstance(row.headers, bytes)
    assert row.created_at.tzinfo is not None
    pg.dispose()
