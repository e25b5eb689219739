"""The database: one SQLAlchemy engine per service, SQLite (WAL) by default, any URL by setting.

Writes go through `Database.write()` (an ORM session) or, on the hot path,
`Database.write_core()` (statements on a Core connection: persistence.transaction), one
transaction each. On SQLite that transaction starts with BEGIN IMMEDIATE, so concurrent
writers queue on the write lock instead of failing when a read transaction tries to
upgrade; reads (`Database.read()`) use a plain BEGIN and never block writers (WAL).
`Database.commit_alone()` runs one statement as a transaction of its own (the relay's
bookkeeping: one round trip on PostgreSQL).
Callbacks registered with `run_after_commit` run only once the transaction is durable:
that is how the relay and WatchOrders learn of new rows without polling. What differs
between SQLite and PostgreSQL is in `kinds`.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, Insert, Table, text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlmodel import Session, SQLModel

from services.common.persistence.kinds import DatabaseKind, SqliteKind, kind_of, kind_of_url
from services.common.persistence.prepared import Prepared
from services.common.persistence.transaction import CoreTransaction, Transaction
from services.common.persistence.wakeup import OutboxSignal
from services.common.persistence.writer_lock import WriterLock

log = logging.getLogger(__name__)

_AFTER_COMMIT = "after_commit_callbacks"

#: PostgreSQL SQLSTATEs that say "try again": serialization failure, deadlock, lock not
#: available, a missing table (the schema is at fault, not an event); and whole classes:
#: connection exception, insufficient resources, operator intervention, system error.
_TRANSIENT_SQLSTATES = frozenset({"40001", "40P01", "55P03", "42P01"})
_TRANSIENT_SQLSTATE_CLASSES = frozenset({"08", "53", "57", "58"})


def is_transient(exc: BaseException) -> bool:
    """Whether `exc` is the database's trouble (try again later), not an event's (narrow).

    A lost connection, a deadlock, a serialization failure, a busy database: retried,
    never dead-lettered. Anything else may be one event's fault.
    """
    if isinstance(exc, DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
        if sqlstate:
            return sqlstate in _TRANSIENT_SQLSTATES or sqlstate[:2] in _TRANSIENT_SQLSTATE_CLASSES
        # No SQLSTATE (SQLite, or the driver lost the server): "database is locked",
        # "disk I/O error", "no such table", "connection refused" are not an event's fault.
        return isinstance(exc, OperationalError | InterfaceError)
    # sqlalchemy's TimeoutError: no pooled connection came free in time.
    return isinstance(exc, ConnectionError | TimeoutError | SATimeoutError)


def _run_after_commit(callbacks: list[Callable[[], None]]) -> None:
    # The transaction is durable: what a callback does (wake the relay, tell watchers) is a
    # side effect, and its failure must never turn a commit into an error.
    for callback in callbacks:
        try:
            callback()
        except Exception:
            log.exception("after-commit callback failed; the commit stands")


def run_after_commit(session: Transaction, callback: Callable[[], None]) -> None:
    """Call `callback` once the session's current transaction has committed (never on rollback)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def insert_ignoring_conflicts(
    session: Transaction, table: Table, *conflict_columns: str, returning: str = ""
) -> Insert:
    """INSERT ... ON CONFLICT (conflict_columns) DO NOTHING [RETURNING returning], in the
    session's SQL dialect.

    The database settles races between replicas: never select-then-insert. The statement
    is built once per database kind and table (it is on the hot path of every consumed
    batch).
    """
    kind = kind_of(session.get_bind().dialect.name)
    return _insert_ignoring(kind, table, conflict_columns, returning)


@functools.cache
def _insert_ignoring(
    kind: DatabaseKind, table: Table, conflict_columns: tuple[str, ...], returning: str
) -> Insert:
    statement = kind.insert_ignoring(table, conflict_columns)
    return statement.returning(table.c[returning]) if returning else statement


class Database:
    """Engines and sessions for one service's database."""

    def __init__(self, url: str, *, pool_size: int = 10, instance: str = "") -> None:
        self.url = url
        #: This replica's name in the saga journal (messaging.journal): its instance id.
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.pool_size = pool_size
        #: What differs on this kind of database (engines, the writer lock, upserts).
        self.kind = kind_of_url(url)
        #: Set after every commit that wrote outbox rows; the relay waits on it (and a relay
        #: in another process hears of it through a wakeup.WakeupChannel).
        self.outbox_signal = OutboxSignal()
        self._write_lock = self.kind.write_lock(url)
        self._writer, self._reader = self.kind.engines(url, pool_size)
        #: For `write_core(durable=False)`.
        self._relaxed_writer = self.kind.relaxed_engine(url, self._writer)
        #: For `commit_alone`: the same connections, each statement a transaction of its own.
        self._relaxed_autocommit = self._relaxed_writer.execution_options(
            isolation_level="AUTOCOMMIT"
        )

    @property
    def is_sqlite(self) -> bool:
        """Whether this is SQLite (one writer at a time)."""
        return isinstance(self.kind, SqliteKind)

    def create_tables(self, tables: Sequence[type[SQLModel]]) -> None:
        """Create these tables directly (unit tests only: services migrate, see migrate.py)."""
        metadata = SQLModel.metadata
        selected = [metadata.tables[str(t.__tablename__)] for t in tables]
        metadata.create_all(self._writer, tables=selected)

    def _info(self) -> dict[Any, Any]:
        return {"outbox_signal": self.outbox_signal, "replica": self.instance}

    def _session(self, engine: Engine) -> Session:
        session = Session(engine, expire_on_commit=False)
        session.info.update(self._info())
        return session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction with an ORM session (the admin API, redrives, refunds,
        deadlines, retention): commits on success, rolls back on any exception."""
        session = self._session(self._writer)
        try:
            with self._write_lock, session.begin():
                yield session
            callbacks = session.info.pop(_AFTER_COMMIT, [])
        finally:
            session.close()
        _run_after_commit(callbacks)

    @contextmanager
    def write_core(self, *, durable: bool = True) -> Iterator[CoreTransaction]:
        """One write transaction, as `write()`, on a Core connection: statements only, none
        of the ORM's unit of work (services.common.persistence.transaction). For the hot
        path: every consumed batch, every CreateOrder group, the relay's bookkeeping. It
        begins at once (on SQLite, BEGIN IMMEDIATE under the writers' lock).

        `durable=False` is for bookkeeping whose loss in a server crash costs only work done
        again (the relay's claims and deletes: rows are published again, and the consumers'
        inbox drops the copies): PostgreSQL then commits without waiting for the WAL flush
        (`synchronous_commit=off` for that transaction only). Every other write waits, and
        SQLite always does (`synchronous=FULL`).
        """
        info = self._info()
        engine = self._writer if durable else self._relaxed_writer
        with self._write_lock, engine.connect() as connection, connection.begin():
            yield CoreTransaction(connection, info)
        _run_after_commit(info.pop(_AFTER_COMMIT, []))

    def commit_alone(self, statement: Any, params: Any = None) -> Sequence[Any]:
        """Run one write statement as a transaction of its own, not waiting for the WAL
        flush (as `write_core(durable=False)`), and return its rows (none if it returns none).

        On PostgreSQL it is sent in autocommit mode: one round trip, where BEGIN, the
        statement and COMMIT take three. A single statement is atomic either way. For the
        relay's bookkeeping, several statements a round on every replica: claims, deletes,
        lease renewals. Not for writes that need a transaction's `info`: no after-commit
        callback runs, and the outbox's signal is not set (so never for outbox rows). A
        `Prepared` statement goes to the driver's cursor (its rows are tuples): SQLAlchemy's
        execution cost a claim about as much CPU as the driver and the server together.
        """
        if self.is_sqlite:  # one writer at a time: the writers' lock and BEGIN IMMEDIATE
            with self.write_core(durable=False) as transaction:
                return _run(transaction, statement, params)
        with self._relaxed_autocommit.connect() as connection:
            return _run(CoreTransaction(connection, {}), statement, params)

    @contextmanager
    def read(self) -> Iterator[Session]:
        """One read-only transaction."""
        with self._session(self._reader) as session:
            yield session

    @contextmanager
    def driver_connection(self) -> Iterator[Any]:
        """The read engine's DB-API connection, for a read on the hot path whose SQLAlchemy
        overhead costs more than the query. SQLite only: no transaction is begun, so each
        statement reads what is committed when it runs."""
        if not self.is_sqlite:
            raise TypeError("driver_connection is for SQLite (autocommit reads) only")
        connection = self._reader.raw_connection()
        try:
            yield connection.driver_connection
        except Exception:
            connection.invalidate()  # as SQLAlchemy does on a driver error: a new one next
            raise
        finally:
            connection.close()

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self._reader.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        if isinstance(self._write_lock, WriterLock):
            self._write_lock.close()
        self._writer.dispose()
        self._reader.dispose()
        self._relaxed_writer.dispose()


def _run(transaction: Transaction, statement: Any, params: Any) -> Sequence[Any]:
    """Run `statement` in `transaction`; its rows, or none for a statement that returns none."""
    if isinstance(statement, Prepared):
        return statement.rows(transaction, params or {})
    result = transaction.execute(statement, params)
    return result.all() if result.returns_rows else []
