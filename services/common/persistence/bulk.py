"""The INSERTs made for every event, in the driver's own terms: SQL made once per database
kind, rows passed as tuples.

SQLAlchemy's executemany builds a parameter dict per row from the compiled statement and
runs each value through its type's bind processor; for the few inserts made for every event
(outbox rows, journal steps, inbox ids, orders and their saga deadlines) that was most of
their Python cost. A `BulkInsert` writes the SQL once per dialect and turns each row (a
mapping, read in column order) into a tuple, converting only the values whose type needs it,
into exactly what SQLAlchemy would have stored (`sqlite_time`: the text of SQLAlchemy's
SQLite DATETIME). It runs on a cursor of the session's connection, inside its transaction
(services.common.persistence.driver): driver errors still arrive as SQLAlchemy's
(services.common.persistence.db's `is_transient` reads them), and nothing escapes the
transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from sqlalchemy import DateTime, Dialect, LargeBinary, Table
from sqlalchemy.types import TypeDecorator
from sqlmodel.sql.sqltypes import UTCDateTime

from services.common.persistence import driver
from services.common.persistence.transaction import Transaction

#: Most values one statement binds (SQLite allows 32766, PostgreSQL 65535).
_MAX_BINDS = 30000

Converter = Callable[[Any], Any]


#: The last datetime sqlite_time wrote, and its text: rows of one batch often share one
#: moment (an inbox batch, an order's creation and update times). One tuple, swapped whole.
_last_time: tuple[datetime | None, str | None] = (None, None)


def sqlite_time(value: datetime | None) -> str | None:
    """A datetime as SQLAlchemy's SQLite DATETIME stores it: UTC, 'YYYY-MM-DD HH:MM:SS.ffffff'."""
    global _last_time
    if value is None:
        return None
    last, text = _last_time
    if value is last:
        return text
    moment = value.astimezone(UTC) if value.tzinfo not in (UTC, None) else value
    text = moment.isoformat(" ", "microseconds")[:26]  # less "+00:00"
    _last_time = (value, text)
    return text


def from_sqlite_time(text: str) -> datetime:
    """What `sqlite_time` stored, read back as SQLAlchemy's UTCDateTime reads it: aware UTC
    (for reads that go to the sqlite3 driver directly)."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _aware(value: datetime | None) -> datetime | None:
    """UTCDateTime's rule: a naive datetime is refused, not guessed at."""
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"a datetime without a time zone cannot be stored: {value!r}")
    return value


def _converter(column_type: Any, dialect: Dialect) -> Converter | None:
    """What turns a value of `column_type` into the driver's value (None: nothing to do)."""
    base = column_type.impl if isinstance(column_type, TypeDecorator) else column_type
    if isinstance(base, DateTime):
        if dialect.name == "sqlite":
            return _sqlite_aware_time if isinstance(column_type, UTCDateTime) else sqlite_time
        return _aware if isinstance(column_type, UTCDateTime) else None
    if isinstance(base, LargeBinary):
        return None  # bytes go as they are (SQLAlchemy's own wrapper stores the same)
    processor: Converter | None = column_type.dialect_impl(dialect).bind_processor(dialect)
    return processor


def _sqlite_aware_time(value: datetime | None) -> str | None:
    return sqlite_time(_aware(value))


class BulkInsert:
    """INSERT INTO `table` (`columns`) of many rows, optionally ignoring rows that conflict on
    `ignore_conflicts_on` and returning column `returning` of the rows inserted."""

    def __init__(
        self,
        table: Table,
        columns: Sequence[str],
        *,
        ignore_conflicts_on: Sequence[str] = (),
        returning: str = "",
    ) -> None:
        self.table = table
        self.columns = tuple(columns)
        self.ignore_conflicts_on = tuple(ignore_conflicts_on)
        self.returning = returning
        getter = itemgetter(*self.columns)
        self._values: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            getter if len(self.columns) > 1 else lambda row: (getter(row),)
        )

    def execute(self, session: Transaction, rows: Sequence[Mapping[str, Any]]) -> list[Any]:
        """Insert `rows` in the session's transaction; return the `returning` values of the
        rows inserted (in no particular order), or [] without `returning`."""
        if not rows:
            return []
        connection = session.connection()
        form = _form_of(self, connection.dialect)
        params = form.params(rows, self._values)
        if not self.returning:
            driver.run(connection, form.sql(1), params, many=True)
            return []
        found: list[Any] = []
        per_statement = max(1, _MAX_BINDS // len(self.columns))
        for start in range(0, len(params), per_statement):
            chunk = params[start : start + per_statement]
            flat = tuple(value for row in chunk for value in row)
            found += [r[0] for r in driver.run(connection, form.sql(len(chunk)), flat)]
        return found


class _Form:
    """A BulkInsert in one dialect's terms: its SQL for n rows, its value converters."""

    def __init__(self, insert: BulkInsert, dialect: Dialect) -> None:
        quote = dialect.identifier_preparer.quote
        self.placeholder = "?" if dialect.paramstyle == "qmark" else "%s"
        row = "(" + ", ".join([self.placeholder] * len(insert.columns)) + ")"
        self.head = (
            f"INSERT INTO {quote(insert.table.name)} "
            f"({', '.join(quote(c) for c in insert.columns)}) VALUES "
        )
        self.row = row
        self.tail = ""
        if insert.ignore_conflicts_on:
            targets = ", ".join(quote(c) for c in insert.ignore_conflicts_on)
            self.tail += f" ON CONFLICT ({targets}) DO NOTHING"
        if insert.returning:
            self.tail += f" RETURNING {quote(insert.returning)}"
        self.converters = [
            (i, converter)
            for i, name in enumerate(insert.columns)
            if (converter := _converter(insert.table.c[name].type, dialect)) is not None
        ]
        self._sql: dict[int, str] = {}

    def sql(self, row_count: int) -> str:
        """The statement for `row_count` rows in one VALUES list."""
        found = self._sql.get(row_count)
        if found is None:
            found = self.head + ", ".join([self.row] * row_count) + self.tail
            if len(self._sql) < 64:
                self._sql[row_count] = found
        return found

    def params(
        self,
        rows: Sequence[Mapping[str, Any]],
        values: Callable[[Mapping[str, Any]], tuple[Any, ...]],
    ) -> list[tuple[Any, ...]]:
        if not self.converters:
            return [values(row) for row in rows]
        converted = []
        for row in rows:
            found = list(values(row))
            for i, converter in self.converters:
                found[i] = converter(found[i])
            converted.append(tuple(found))
        return converted


@functools.cache
def _form_of(insert: BulkInsert, dialect: Dialect) -> _Form:
    return _Form(insert, dialect)
