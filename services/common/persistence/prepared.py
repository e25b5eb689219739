"""Core statements compiled once per database kind, run on the driver's cursor.

The selects and updates of every consumed batch and CreateOrder group (the rows a batch
locks, the balances it reads and writes, the orders it ends) went through
`Session.execute`: for each call SQLAlchemy looks up its compiled form, builds an execution
context, expands the IN lists, dispatches events and wraps a result. At one or two records a
transaction, which is what moderate loads bring, that is most of a statement's cost.

A `Prepared` keeps SQLAlchemy's statement and its SQL. It compiles the statement once per
dialect and per IN-list size (each IN list padded to a power of two by repeating its last
value: the same rows match), and each call only orders the parameters, converts those whose
type needs it, and converts each result column, with SQLAlchemy's own bind and result
processors: a row reads back as `Session.execute` would give it. It runs on a cursor of the
session's connection, inside its transaction (services.common.persistence.driver), so driver
errors arrive as SQLAlchemy's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from sqlalchemy import Dialect
from sqlalchemy.sql import operators
from sqlalchemy.sql.expression import BindParameter, ClauseElement

from services.common.persistence import driver
from services.common.persistence.transaction import Transaction

Converter = Callable[[Any], Any]

#: Most compiled forms kept per statement and dialect (IN-list sizes are powers of two).
_MAX_FORMS = 24


def _padded_size(count: int) -> int:
    """The IN-list size `count` values are sent as: the next power of two."""
    return 1 << max(0, count - 1).bit_length()


class Prepared:
    """A SQLAlchemy Core statement (`statement`), run on the driver's cursor.

    `expanding` names its IN-list parameters (`bindparam(name, expanding=True)`); every
    other parameter is one value. A statement whose IN list is empty is not run: it selects
    and changes nothing. That is what SQL would do only where the IN list is one of the
    terms ANDed together in the WHERE clause, so a statement must put it there (checked
    here). `execute_many` takes statements without IN lists.
    """

    def __init__(self, statement: ClauseElement, *, expanding: Sequence[str] = ()) -> None:
        self.statement = statement
        self.expanding = tuple(expanding)
        for name in self.expanding:
            if not _anded_in_list(statement, name):
                raise ValueError(
                    f"{name!r} must be an IN list ANDed into the WHERE clause "
                    f"(`column.in_(bindparam({name!r}, expanding=True))`)"
                )
        self._forms: dict[tuple[str, str, str, tuple[int, ...]], _Form] = {}

    def rows(self, session: Transaction, params: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """The rows the statement selects, each column converted as SQLAlchemy would."""
        if self._matches_nothing(params):
            return []
        connection = session.connection()
        form = self._form(connection.dialect, params)
        return form.convert_rows(driver.run(connection, form.sql, form.params(params)))

    def mappings(self, session: Transaction, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The rows the statement selects, as dicts by column key."""
        if self._matches_nothing(params):
            return []
        connection = session.connection()
        form = self._form(connection.dialect, params)
        keys = form.keys
        rows = form.convert_rows(driver.run(connection, form.sql, form.params(params)))
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def execute(self, session: Transaction, params: Mapping[str, Any]) -> None:
        """Run a statement that returns no rows (an UPDATE, a DELETE) once."""
        if self._matches_nothing(params):
            return
        connection = session.connection()
        form = self._form(connection.dialect, params)
        driver.run(connection, form.sql, form.params(params))

    def execute_many(self, session: Transaction, rows: Sequence[Mapping[str, Any]]) -> int | None:
        """Run the statement once per parameter row (the driver's executemany); return the
        rows it changed in all, or None where the driver does not count an executemany's
        rows (`dialect.supports_sane_multi_rowcount`)."""
        if self.expanding:
            raise ValueError("execute_many takes statements without IN lists")
        if not rows:
            return 0
        connection = session.connection()
        dialect = connection.dialect
        form = self._form(dialect, rows[0])
        changed = driver.count(connection, form.sql, [form.params(row) for row in rows])
        return changed if dialect.supports_sane_multi_rowcount else None

    def _matches_nothing(self, params: Mapping[str, Any]) -> bool:
        return any(not params[name] for name in self.expanding)

    def _form(self, dialect: Dialect, params: Mapping[str, Any]) -> _Form:
        sizes = tuple(_padded_size(len(params[name])) for name in self.expanding)
        key = (dialect.name, dialect.driver, dialect.paramstyle, sizes)
        form = self._forms.get(key)
        if form is None:
            form = _Form(self, dialect, sizes)
            if len(self._forms) < _MAX_FORMS:
                self._forms[key] = form
        return form


def _anded_in_list(statement: ClauseElement, name: str) -> bool:
    """Whether `statement`'s WHERE clause is `... AND column IN (:name) AND ...`."""
    where = getattr(statement, "whereclause", None)
    if where is None:
        return False
    terms = where.clauses if getattr(where, "operator", None) is operators.and_ else [where]
    return any(
        getattr(term, "operator", None) is operators.in_op
        and isinstance(term.right, BindParameter)
        and term.right.key == name
        for term in terms
    )


class _Form:
    """A Prepared in one dialect's terms, for one size of each IN list."""

    def __init__(self, prepared: Prepared, dialect: Dialect, sizes: tuple[int, ...]) -> None:
        compiled: Any = prepared.statement.compile(dialect=dialect)  # an SQLCompiler
        binds = {rendered: bind for bind, rendered in compiled.bind_names.items()}
        sized = dict(zip(prepared.expanding, sizes, strict=True))
        blank = {name: None for name, bind in binds.items() if bind.required}
        state = compiled.construct_expanded_state(
            blank | {name: [None] * size for name, size in sized.items()}
        )
        self.sql: str = state.statement
        self.positional: bool = compiled.positional
        expanded = {
            sent: (name, i)
            for name, sents in state.parameter_expansion.items()
            for i, sent in enumerate(sents)
        }
        #: Per parameter sent, in order: its name, then where its value comes from (the
        #: caller's name, or an IN list and index), or the statement's own constant value;
        #: and its converter.
        self.slots: list[tuple[str, str | tuple[str, int] | None, Any, Converter | None]] = []
        for name in state.positiontup or list(state.parameters):
            source: str | tuple[str, int] | None = expanded.get(name)
            bind = binds[source[0] if source else name]
            processor = bind.type.dialect_impl(dialect).bind_processor(dialect)
            constant = None
            if source is None and bind.required:
                source = name
            elif source is None:  # a literal of the statement's (kind == 'CHARGE')
                value = state.parameters[name]
                constant = processor(value) if processor is not None else value
            self.slots.append((name, source, constant, processor))
        columns = list(getattr(prepared.statement, "selected_columns", ()))
        self.keys = [column.key for column in columns]
        self.result_converters = [
            (i, converter)
            for i, column in enumerate(columns)
            if (converter := column.type.dialect_impl(dialect).result_processor(dialect, None))
            is not None
        ]

    def params(self, given: Mapping[str, Any]) -> tuple[Any, ...] | dict[str, Any]:
        """What the driver is sent for `given`: a tuple (positional paramstyles) or a dict."""
        values = []
        for _name, source, constant, processor in self.slots:
            if source is None:
                values.append(constant)
                continue
            if isinstance(source, str):
                value = given[source]
            else:
                listed = given[source[0]]
                value = listed[min(source[1], len(listed) - 1)]  # padded with the last value
            values.append(processor(value) if processor is not None else value)
        if self.positional:
            return tuple(values)
        return {slot[0]: value for slot, value in zip(self.slots, values, strict=True)}

    def convert_rows(self, rows: list[Any]) -> list[tuple[Any, ...]]:
        """The driver's rows, each column converted as SQLAlchemy's result would."""
        if not self.result_converters:
            return [tuple(row) for row in rows]
        converted = []
        for row in rows:
            values = list(row)
            for i, converter in self.result_converters:
                values[i] = converter(values[i])
            converted.append(tuple(values))
        return converted
