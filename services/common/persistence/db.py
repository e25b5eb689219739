"""The database: one SQLAlchemy engine per service, SQLite (WAL) by default, any URL by setting.

Writes go through `Database.write()`, one transaction each. On SQLite that transaction
starts with BEGIN IMMEDIATE, so concurrent writers queue on the write lock instead of
failing when a read transaction tries to upgrade; reads (`Database.read()`) use a plain
BEGIN and never block writers (WAL). Callbacks registered with `run_after_commit` run
only once the transaction is durable: that is how the relay and WatchOrders learn of
new rows without polling.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any

from sqlalchemy import Engine, Insert, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as SATimeoutError
from sqlmodel import Session, SQLModel

log = logging.getLogger(__name__)

#: SQLite settings applied to every connection. synchronous=FULL makes every commit
#: durable across power loss: a committed debit must never vanish after its Kafka
#: offset was committed (see README, Guarantees).
SQLITE_PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA foreign_keys=ON",
    "PRAGMA cache_size=-16000",
)

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


def run_after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Call `callback` once the session's current transaction has committed (never on rollback)."""
    session.info.setdefault(_AFTER_COMMIT, []).append(callback)


def insert_ignoring_conflicts(
    session: Session, table: Table, *conflict_columns: str, returning: str = ""
) -> Insert:
    """INSERT ... ON CONFLICT (conflict_columns) DO NOTHING [RETURNING returning], in the
    session's SQL dialect.

    The database settles races between replicas: never select-then-insert. The statement
    is built once per dialect and table (it is on the hot path of every consumed batch).
    """
    return _insert_ignoring(session.get_bind().dialect.name, table, conflict_columns, returning)


@functools.cache
def _insert_ignoring(
    dialect: str, table: Table, conflict_columns: tuple[str, ...], returning: str
) -> Insert:
    module = postgresql if dialect == "postgresql" else sqlite
    statement = module.insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))
    return statement.returning(table.c[returning]) if returning else statement


class Database:
    """Engines and sessions for one service's database."""

    def __init__(self, url: str, *, pool_size: int = 10, instance: str = "") -> None:
        self.url = url
        #: This replica's name in the saga journal (messaging.journal): its instance id.
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self.pool_size = pool_size
        self.is_sqlite = make_url(url).get_backend_name() == "sqlite"
        #: Set after every commit that wrote outbox rows; the relay waits on it.
        self.outbox_signal = threading.Event()
        # SQLite has one writer at a time. Writers of this process queue on a Python lock,
        # which hands over at once; left to SQLite's busy handler, a waiting writer sleeps
        # in steps of up to 100 ms however soon the lock is free.
        self._write_lock: AbstractContextManager[Any] = (
            threading.Lock() if self.is_sqlite else nullcontext()
        )
        self._writer = self._create_engine(begin="BEGIN IMMEDIATE")
        self._reader = self._create_engine(begin="BEGIN") if self.is_sqlite else self._writer

    def _create_engine(self, *, begin: str) -> Engine:
        if not self.is_sqlite:
            return create_engine(
                self.url, pool_pre_ping=True, pool_size=self.pool_size, max_overflow=self.pool_size
            )
        path = make_url(self.url).database
        if path and path != ":memory:":
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        engine = create_engine(self.url, connect_args={"check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _configure(dbapi_connection: Any, _record: Any) -> None:
            # Let SQLAlchemy, not the sqlite3 module, decide where transactions
            # begin, so that BEGIN IMMEDIATE and SAVEPOINT work as written.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            for pragma in SQLITE_PRAGMAS:
                cursor.execute(pragma)
            cursor.close()

        @event.listens_for(engine, "begin")
        def _begin(connection: Any) -> None:
            connection.exec_driver_sql(begin)

        return engine

    def create_tables(self, tables: Sequence[type[SQLModel]]) -> None:
        """Create these tables directly (unit tests only: services migrate, see migrate.py)."""
        metadata = SQLModel.metadata
        selected = [metadata.tables[str(t.__tablename__)] for t in tables]
        metadata.create_all(self._writer, tables=selected)

    def _session(self, engine: Engine) -> Session:
        session = Session(engine, expire_on_commit=False)
        session.info["outbox_signal"] = self.outbox_signal
        session.info["replica"] = self.instance
        return session

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One write transaction: commits on success, rolls back on any exception."""
        session = self._session(self._writer)
        try:
            with self._write_lock, session.begin():
                yield session
            callbacks = session.info.pop(_AFTER_COMMIT, [])
        finally:
            session.close()
        # The transaction is durable: what a callback does (wake the relay, tell watchers)
        # is a side effect, and its failure must never turn a commit into an error.
        for callback in callbacks:
            try:
                callback()
            except Exception:
                log.exception("after-commit callback failed; the commit stands")

    @contextmanager
    def read(self) -> Iterator[Session]:
        """One read-only transaction."""
        with self._session(self._reader) as session:
            yield session

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self._reader.connect() as connection:
            connection.execute(text("SELECT 1"))

    def dispose(self) -> None:
        self._writer.dispose()
        self._reader.dispose()
