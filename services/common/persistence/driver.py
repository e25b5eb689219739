"""Statements run on the DB-API connection itself, for the few that every transaction pays for.

SQLAlchemy's `Connection.exec_driver_sql` spends tens of microseconds per statement beyond
what the driver does (an execution context, event dispatch, a result object). A consumed
batch of a few records, or a CreateOrder group of one order, runs a handful of such
statements (BEGIN, the inbox, outbox and journal inserts); at one record a transaction,
skipping that overhead saved 5–10% of a hop's CPU (docs/performance.md, window 5). `run`
hands the statement to a cursor of the same connection, inside the same transaction, and
keeps what callers rely on:

- a driver error arrives as SQLAlchemy's (`DBAPIError` and its subclasses, the driver's
  error as `orig`), so `db.is_transient` and the batch's narrowing read it as before;
- a lost connection is invalidated, and so is every older connection of the pool (after a
  failover they are all dead): the pool hands none of them out again.

That handling is SQLAlchemy's own, reached through a private method
(`Connection._handle_dbapi_exception`); tests/unit/common/persistence/test_driver.py pins
what it must do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Connection


def run(
    connection: Connection,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    many: bool = False,
) -> list[Any]:
    """Execute `sql` in `connection`'s transaction (`many`: once per row of `params`, with
    the driver's executemany); return the rows it returned ([] if none). The SQL is in the
    driver's paramstyle and `params` hold what the driver takes (no type conversion here).

    An error goes through SQLAlchemy's own handling (`_handle_dbapi_exception`, what
    `exec_driver_sql` calls): translated, the cursor closed, and a lost connection
    invalidated together with every connection the pool made before it, as a lost
    connection anywhere else would be.
    """
    return _execute(connection, sql, params, many)[0]


def count(connection: Connection, sql: str, rows: Sequence[Any]) -> int:
    """Execute `sql` once per parameter row of `rows` (executemany), as `run` does; return
    the driver's count of rows changed (its `rowcount`)."""
    return _execute(connection, sql, rows, True)[1]


def _execute(
    connection: Connection,
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None,
    many: bool,
) -> tuple[list[Any], int]:
    cursor: Any = None
    try:
        cursor = connection.connection.cursor()
        if many:
            cursor.executemany(sql, params or ())
        elif params is None:
            cursor.execute(sql)
        else:
            cursor.execute(sql, params)
        rows = list(cursor.fetchall()) if cursor.description is not None else []
        changed = cursor.rowcount
    except BaseException as exc:
        connection._handle_dbapi_exception(exc, sql, params, cursor, None)
    cursor.close()
    return rows, changed
