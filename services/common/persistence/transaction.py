"""A write transaction on a Core connection, for the hot path: statements only, no ORM.

Every consumed batch and every CreateOrder group is one write transaction. Through a
`Session` each pays for the ORM's unit of work around it even though these transactions
add no objects: a session transaction over the connection's transaction, its state
machine, its flush on commit, its close. At one record a transaction, the load a moderate
rate brings, leaving it out saves 10–17% of a hop's CPU (docs/performance.md, window 7).
`CoreTransaction` is the connection's own transaction, with what the hot path's writers use
of a session: `connection()`, `execute()`, `get_bind()` and `info`.

`Transaction` is that shape as a type: the shared writers (the outbox, the journal, the
inbox, `BulkInsert`, `Prepared`) take either a `CoreTransaction` or a `Session`, so the
paths that do use the ORM (the admin API, redrives, refunds) keep their sessions.
"""

from __future__ import annotations

from typing import Any, Protocol

from sqlalchemy import Connection, Engine


class Transaction(Protocol):
    """What a writer on the hot path uses of its transaction (a `Session` has it too)."""

    @property
    def info(self) -> dict[Any, Any]:
        """Per-transaction state: the after-commit callbacks, the outbox's signal, the
        replica's name."""
        ...

    def connection(self) -> Connection:
        """The transaction's connection (begun)."""
        ...

    def execute(self, statement: Any, params: Any = None) -> Any:
        """Execute a SQLAlchemy statement in the transaction."""
        ...

    def get_bind(self) -> Engine | Connection:
        """What the transaction runs on (its dialect says which database)."""
        ...


class CoreTransaction:
    """A begun transaction on `connection` (see the module's docstring); `info` as a
    session's."""

    __slots__ = ("_connection", "info")

    def __init__(self, connection: Connection, info: dict[Any, Any]) -> None:
        self._connection = connection
        self.info = info

    def connection(self) -> Connection:
        return self._connection

    def execute(self, statement: Any, params: Any = None) -> Any:
        return self._connection.execute(statement, params)

    def get_bind(self) -> Connection:
        return self._connection
