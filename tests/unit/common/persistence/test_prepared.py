"""Prepared statements read and write exactly what `Session.execute` does with the same
statement: rows, their types (aware datetimes, booleans), IN lists of any length, the
statement's own literals, and the count of rows an executemany changed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Table, bindparam, delete, or_, select, update
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.dialects.postgresql import psycopg as postgresql_psycopg

from services.common.persistence.db import Database
from services.common.persistence.prepared import Prepared
from services.payment.models import CHARGE, REFUND, Account, Payment, Transaction

pytestmark = pytest.mark.unit

PAYMENTS: Table = Payment.__table__  # type: ignore[attr-defined]
ACCOUNTS: Table = Account.__table__  # type: ignore[attr-defined]
TRANSACTIONS: Table = Transaction.__table__  # type: ignore[attr-defined]
MOMENT = datetime(2026, 12, 6, 9, 0, 0, 123456, tzinfo=UTC)

SELECT_PAYMENTS = select(PAYMENTS).where(
    PAYMENTS.c.order_id.in_(bindparam("order_ids", expanding=True))
)
SELECT_CHARGES = select(TRANSACTIONS.c.order_id, TRANSACTIONS.c.id).where(
    TRANSACTIONS.c.order_id.in_(bindparam("order_ids", expanding=True)),
    TRANSACTIONS.c.kind == CHARGE,
)
LOCK_ACCOUNTS = (
    select(ACCOUNTS.c.user_id, ACCOUNTS.c.balance_cents)
    .where(ACCOUNTS.c.user_id.in_(bindparam("user_ids", expanding=True)))
    .order_by(ACCOUNTS.c.user_id)
    .with_for_update()
)
UPDATE_BALANCE = (
    update(ACCOUNTS)
    .where(ACCOUNTS.c.user_id == bindparam("account_user_id"))
    .values(balance_cents=bindparam("balance_cents"), updated_at=bindparam("updated_at"))
)
MARK_REFUNDED = (
    update(PAYMENTS)
    .where(PAYMENTS.c.order_id == bindparam("payment_order_id"))
    .where(PAYMENTS.c.refunded_at.is_(None))
    .values(refunded_at=bindparam("refunded_at"))
)
DELETE_PAYMENTS = delete(PAYMENTS).where(
    PAYMENTS.c.order_id.in_(bindparam("order_ids", expanding=True))
)


@pytest.fixture
def db(store_url: str) -> Database:
    db = Database(store_url)
    db.create_tables([Account, Payment, Transaction])
    with db.write() as session:
        session.execute(
            ACCOUNTS.insert(),
            [{"user_id": u, "balance_cents": 1000 * u, "updated_at": MOMENT} for u in range(1, 8)],
        )
        session.execute(
            PAYMENTS.insert(),
            [
                {
                    "order_id": f"o{i}",
                    "user_id": i % 7 + 1,
                    "amount_cents": 100 + i,
                    "approved": i % 2 == 0,
                    "reason": "" if i % 2 == 0 else "insufficient funds",
                    "refunded_at": MOMENT + timedelta(seconds=i) if i % 4 == 0 else None,
                    "created_at": MOMENT - timedelta(microseconds=i),
                }
                for i in range(10)
            ],
        )
        session.execute(
            TRANSACTIONS.insert(),
            [
                {
                    "id": f"t{i}-{kind}",
                    "order_id": f"o{i}",
                    "kind": kind,
                    "user_id": i % 7 + 1,
                    "amount_cents": 100 + i,
                    "created_at": MOMENT,
                }
                for i in range(0, 10, 2)
                for kind in ((CHARGE, REFUND) if i % 4 == 0 else (CHARGE,))
            ],
        )
    return db


@pytest.mark.parametrize("count", [1, 2, 3, 5, 9])
def test_rows_are_what_session_execute_gives(db: Database, count: int) -> None:
    order_ids = [f"o{i}" for i in range(count)] + ["absent"]
    user_ids = list(range(1, count + 1))
    with db.write() as session:
        expected = [
            dict(r) for r in session.execute(SELECT_PAYMENTS, {"order_ids": order_ids}).mappings()
        ]
        found = Prepared(SELECT_PAYMENTS, expanding=["order_ids"]).mappings(
            session, {"order_ids": order_ids}
        )
        assert sorted(found, key=str) == sorted(expected, key=str)
        assert len(found) == count
        locked = Prepared(LOCK_ACCOUNTS, expanding=["user_ids"]).rows(
            session, {"user_ids": user_ids}
        )
        assert locked == [tuple(r) for r in session.execute(LOCK_ACCOUNTS, {"user_ids": user_ids})]
    for row in found:
        assert isinstance(row["approved"], bool)
        assert row["created_at"].tzinfo is not None
        assert row["refunded_at"] is None or row["refunded_at"].tzinfo is not None


def test_the_statement_s_own_literals_are_sent(db: Database) -> None:
    order_ids = [f"o{i}" for i in range(10)]
    with db.read() as session:
        found = Prepared(SELECT_CHARGES, expanding=["order_ids"]).rows(
            session, {"order_ids": order_ids}
        )
    assert sorted(found) == [(f"o{i}", f"t{i}-{CHARGE}") for i in range(0, 10, 2)]


def test_an_executemany_counts_the_rows_it_changed(db: Database) -> None:
    later = MOMENT + timedelta(hours=1)
    marks: list[dict[str, Any]] = [
        {"payment_order_id": f"o{i}", "refunded_at": later} for i in (1, 2, 4, 99)
    ]
    balances = [{"account_user_id": u, "balance_cents": 5, "updated_at": later} for u in (1, 2)]
    with db.write() as session:
        # o4 was refunded already and o99 does not exist: two of four rows change.
        assert Prepared(MARK_REFUNDED).execute_many(session, marks) == 2
        assert Prepared(UPDATE_BALANCE).execute_many(session, balances) == 2
        assert Prepared(UPDATE_BALANCE).execute_many(session, []) == 0
    with db.read() as session:
        refunded = dict(session.execute(select(PAYMENTS.c.order_id, PAYMENTS.c.refunded_at)).all())
        account = session.get(Account, 2)
    assert refunded["o1"] == refunded["o2"] == later
    assert refunded["o4"] == MOMENT + timedelta(seconds=4)
    assert account is not None and account.balance_cents == 5 and account.updated_at == later


def test_a_delete_with_an_in_list_deletes_only_what_it_names(db: Database) -> None:
    with db.write() as session:
        Prepared(DELETE_PAYMENTS, expanding=["order_ids"]).rows(
            session, {"order_ids": ["o1", "o2", "o3"]}
        )
    with db.read() as session:
        left = sorted(session.execute(select(PAYMENTS.c.order_id)).scalars())
    assert left == ["o0"] + [f"o{i}" for i in range(4, 10)]


def test_a_naive_datetime_is_refused_as_sqlalchemy_refuses_it(db: Database) -> None:
    naive = [{"account_user_id": 1, "balance_cents": 5, "updated_at": datetime(2026, 1, 1)}]
    with pytest.raises(ValueError, match="naive"), db.write() as session:
        Prepared(UPDATE_BALANCE).execute_many(session, naive)


def test_an_empty_in_list_selects_and_changes_nothing(db: Database) -> None:
    with db.write() as session:
        assert (
            Prepared(SELECT_PAYMENTS, expanding=["order_ids"]).rows(session, {"order_ids": []})
            == []
        )
        assert (
            Prepared(SELECT_PAYMENTS, expanding=["order_ids"]).mappings(session, {"order_ids": []})
            == []
        )
        Prepared(DELETE_PAYMENTS, expanding=["order_ids"]).execute(session, {"order_ids": []})
    with db.read() as session:
        assert len(session.execute(select(PAYMENTS.c.order_id)).all()) == 10


def test_where_the_driver_cannot_count_an_executemany_the_count_is_none(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(db._writer.dialect, "supports_sane_multi_rowcount", False)
    balances = [{"account_user_id": 1, "balance_cents": 5, "updated_at": MOMENT}]
    with db.write() as session:
        assert Prepared(UPDATE_BALANCE).execute_many(session, balances) is None


def test_the_lock_is_rendered_on_postgresql_and_left_out_on_sqlite() -> None:
    lock = Prepared(LOCK_ACCOUNTS, expanding=["user_ids"])
    on_postgresql = lock._form(postgresql_psycopg.dialect(), {"user_ids": [1, 2, 3]}).sql
    on_sqlite = lock._form(sqlite_dialect.dialect(), {"user_ids": [1, 2, 3]}).sql
    assert on_postgresql.endswith("FOR UPDATE")
    assert on_postgresql.count("%(user_ids_") == 4  # three values padded to four
    assert "FOR UPDATE" not in on_sqlite
    assert on_sqlite.count("?") == 4


def test_an_in_list_that_is_not_anded_into_the_where_clause_is_refused() -> None:
    ored = select(PAYMENTS).where(
        or_(PAYMENTS.c.order_id.in_(bindparam("order_ids", expanding=True)), PAYMENTS.c.approved)
    )
    with pytest.raises(ValueError, match="ANDed"):
        Prepared(ored, expanding=["order_ids"])
    with pytest.raises(ValueError, match="ANDed"):
        Prepared(UPDATE_BALANCE, expanding=["account_user_id"])


def test_execute_many_takes_no_in_lists(db: Database) -> None:
    with pytest.raises(ValueError, match="IN lists"), db.write() as session:
        Prepared(DELETE_PAYMENTS, expanding=["order_ids"]).execute_many(
            session, [{"order_ids": ["o1"]}]
        )
