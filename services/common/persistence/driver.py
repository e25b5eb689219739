"""Statements run on the DB-API connection itself, for the few that every transaction pays for.

SQLAlchemy's `Connection.exec_driver_sql` spends tens of microseconds per statement beyond
what the driver does (an execution context, event dispatch, a result object). A consumed
batch of a few records, or a CreateOrder group of one order, runs a handful of such
statements (BEGIN, the inbox, outbox and journal inserts), so at moderate load that
overhead is a tenth of the batch's CPU. `run` hands the statement to a cursor of the same
connection, inside the same transaction, and keeps what callers rely on:

- a driver error arrives as SQLAlchemy's (`DBAPIError` and its subclasses, the driver's
  error as `orig`), so `db.is_transient` and the batch's narrowing read it as before;
- a lost connection is invalidated, so the pool never hands it out again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError


def run(
    connection: Connection, sql: str, params: Sequence[Any] = (), *, many: bool = False
) -> list[Any]:
    """Execute `sql` in `connection`'s transaction (`many`: once per row of `params`, with
    the driver's executemany); return the rows it returned ([] if none). The SQL is in the
    driver's paramstyle and `params` hold what the driver takes (no type conversion here)."""
    dialect = connection.dialect
    driver_error = dialect.loaded_dbapi.Error
    proxied = connection.connection
    cursor = proxied.cursor()
    try:
        if many:
            cursor.executemany(sql, params)
        else:
            cursor.execute(sql, params)
        return list(cursor.fetchall()) if cursor.description is not None else []
    except driver_error as exc:
        lost = dialect.is_disconnect(exc, proxied, cursor)
        if lost:
            connection.invalidate(exc)
        raise DBAPIError.instance(
            sql,
            params,
            exc,
            driver_error,
            connection_invalidated=lost,
            dialect=dialect,
            ismulti=many,
        ) from exc
    finally:
        cursor.close()
