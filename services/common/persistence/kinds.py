"""What differs between the databases paysaga runs on: one class per kind, chosen once.

SQLite (the default, one replica) and PostgreSQL (any number of replicas) differ in how
their engines are made, whether writers queue on a lock of their own, how an INSERT
that ignores conflicts is spelt, and how replicas that migrate at once wait for each
other. `Database` and `migrate` ask the kind instead of branching on its name. A URL of
any other backend is treated as a server database like PostgreSQL.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from sqlalchemy import Connection, Engine, Insert, Table, create_engine, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.dialects.sqlite.pysqlite import SQLiteDialect_pysqlite
from sqlalchemy.engine.url import make_url
from sqlalchemy.exc import DisconnectionError

from services.common.persistence import driver
from services.common.persistence.writer_lock import WriterLock

#: SQLite settings applied to every connection. synchronous=FULL makes every commit
#: durable across power loss: a committed debit must never vanish after its Kafka
#: offset was committed (see docs/design.md, Guarantees).
SQLITE_PRAGMAS = (
    # First: the others may wait for a lock too (a new connection's journal_mode, while
    # another one checkpoints), and then the 30 s apply rather than the driver's 5 s.
    "PRAGMA busy_timeout=30000",
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA foreign_keys=ON",
    "PRAGMA cache_size=-16000",
)

#: Reads a SQLite URL as the engines' driver does (sqlite_file, sqlite_connection).
_PYSQLITE = SQLiteDialect_pysqlite()

#: pg_advisory_lock key held while migrating ("paysaga" in ASCII).
MIGRATION_LOCK_KEY = 0x70617973616761


class DatabaseKind(ABC):
    """The behaviour of one kind of database (stateless: one instance per kind)."""

    @abstractmethod
    def engines(self, url: str, pool_size: int) -> tuple[Engine, Engine]:
        """The engines for writes and for reads (the same one where reads need no other)."""

    @abstractmethod
    def relaxed_engine(self, url: str, writer: Engine) -> Engine:
        """The engine for writes that need not wait for the disk (Database.write's
        `durable=False`): `writer` itself where every commit waits."""

    @abstractmethod
    def write_lock(self, url: str) -> AbstractContextManager[Any]:
        """What a writer holds around each write transaction on the database at `url`."""

    @abstractmethod
    def insert_ignoring(self, table: Table, conflict_columns: Sequence[str]) -> Insert:
        """INSERT INTO `table` ... ON CONFLICT (conflict_columns) DO NOTHING, in this
        database's dialect."""

    @abstractmethod
    def migration_lock(self, connection: Connection, url: str) -> AbstractContextManager[None]:
        """Held while migrating, so replicas that migrate at once take turns."""


class SqliteKind(DatabaseKind):
    """SQLite in WAL mode: one writer at a time, readers that never block it."""

    def engines(self, url: str, pool_size: int) -> tuple[Engine, Engine]:
        # Writes start with BEGIN IMMEDIATE, so concurrent writers queue on the write lock
        # instead of failing when a read transaction tries to upgrade; reads use a plain
        # BEGIN on their own engine.
        return _sqlite_engine(url, begin="BEGIN IMMEDIATE"), _sqlite_engine(url, begin="BEGIN")

    def relaxed_engine(self, url: str, writer: Engine) -> Engine:
        return writer  # synchronous=FULL for every commit: the file has one setting

    def write_lock(self, url: str) -> AbstractContextManager[Any]:
        # One writer at a time, queued in the process and across the processes that share
        # the file (writer_lock); an in-memory database has one process.
        path = sqlite_file(url)
        if path is None:
            return threading.Lock()
        return WriterLock(Path(os.path.realpath(path)))

    def insert_ignoring(self, table: Table, conflict_columns: Sequence[str]) -> Insert:
        return sqlite.insert(table).on_conflict_do_nothing(index_elements=list(conflict_columns))

    @contextmanager
    def migration_lock(self, connection: Connection, url: str) -> Iterator[None]:
        """A lock file next to the database (an in-memory database needs none)."""
        path = sqlite_file(url)
        if path is None:
            yield
            return
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with open(f"{path}.migrate-lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield


def sqlite_file(url: str) -> str | None:
    """The absolute path of the file SQLAlchemy's SQLite driver opens for `url`, or None for
    a database in memory (which only its own process sees). Every process of one database
    derives its locks and wake-up channel from it, so it must be the driver's own reading
    of the URL: with `uri` set (any true spelling) `file:var/order.db?mode=rwc` names
    var/order.db, and `file::memory:`, `mode=memory` or `vfs=memdb` a memory database;
    without it, `file:order.db` is a file of that name."""
    filename, uri = _sqlite_connect_args(url)
    if not uri:
        return None if filename in ("", ":memory:") else os.path.abspath(filename)
    path, _, query = filename.removeprefix("file:").partition("?")
    path = path.partition("#")[0]
    if path.startswith("//"):  # file://host/path: the path begins after the authority
        slash = path.find("/", 2)
        path = path[slash:] if slash > 0 else ""
    options = set(query.split("&"))
    if path in ("", ":memory:") or {"mode=memory", "vfs=memdb"} & options:
        return None
    return os.path.abspath(unquote(path))


def sqlite_connection(url: str) -> sqlite3.Connection:
    """A plain sqlite3 connection (autocommit) to the database SQLAlchemy opens for `url`,
    with the services' settings (SQLITE_PRAGMAS), for work outside the engines: the
    worker's checkpoints. It may be used from the thread that made it only."""
    filename, uri = _sqlite_connect_args(url)
    connection = sqlite3.connect(filename, uri=uri, isolation_level=None)
    for pragma in SQLITE_PRAGMAS:
        connection.execute(pragma)
    return connection


def _sqlite_connect_args(url: str) -> tuple[str, bool]:
    """(filename, whether it is a URI) as SQLAlchemy's driver passes them to sqlite3.connect."""
    args, options = _PYSQLITE.create_connect_args(make_url(url))
    return str(args[0]) if args else "", bool(options.get("uri", False))


def _sqlite_engine(url: str, *, begin: str) -> Engine:
    path = sqlite_file(url)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
    engine = create_engine(url, connect_args={"check_same_thread": False})

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
        driver.run(connection, begin)

    return engine


class PostgresKind(DatabaseKind):
    """PostgreSQL: a pool shared by reads and writes; the database orders the writers."""

    def engines(self, url: str, pool_size: int) -> tuple[Engine, Engine]:
        engine = create_engine(url, pool_size=pool_size, max_overflow=pool_size)
        ping_when_idle(engine)
        return engine, engine

    def relaxed_engine(self, url: str, writer: Engine) -> Engine:
        # A small pool of its own whose sessions commit without waiting for the WAL flush.
        engine = create_engine(
            url,
            pool_size=2,
            max_overflow=2,
            connect_args={"options": "-c synchronous_commit=off"},
        )
        ping_when_idle(engine)
        return engine

    def write_lock(self, url: str) -> AbstractContextManager[Any]:
        return nullcontext()

    def insert_ignoring(self, table: Table, conflict_columns: Sequence[str]) -> Insert:
        return postgresql.insert(table).on_conflict_do_nothing(
            index_elements=list(conflict_columns)
        )

    @contextmanager
    def migration_lock(self, connection: Connection, url: str) -> Iterator[None]:
        """An advisory lock: every replica migrating at once queues on it."""
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": MIGRATION_LOCK_KEY})
            connection.commit()


#: A pooled connection unused for longer than this is pinged before it is handed out.
IDLE_PING_AFTER_S = 1.0


def ping_when_idle(engine: Engine, idle_s: float | None = None) -> None:
    """Check a pooled connection before handing it out, as SQLAlchemy's `pool_pre_ping`
    does, but only one that sat unused for over `idle_s` (IDLE_PING_AFTER_S): under load
    connections come back within milliseconds, and a ping on every checkout cost each
    transaction a round trip. A connection the server dropped while idle (a restart, an
    idle timeout) is replaced before anyone uses it; one dropped in the last second fails
    its next statement, which writers retry (a lost connection is transient) and after
    which the pool replaces every older connection."""
    limit = IDLE_PING_AFTER_S if idle_s is None else idle_s

    @event.listens_for(engine, "connect")
    @event.listens_for(engine, "checkin")
    def _used(_dbapi_connection: Any, record: Any) -> None:
        record.info["used_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("used_at", 0.0) <= limit:
            return
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute("SELECT 1")
            cursor.close()
            dbapi_connection.rollback()
        except Exception as exc:  # the pool retries the checkout with a new connection
            raise DisconnectionError(f"pooled connection lost while idle: {exc}") from exc


SQLITE = SqliteKind()
POSTGRES = PostgresKind()


def kind_of(backend: str) -> DatabaseKind:
    """The kind for a SQLAlchemy backend or dialect name ("sqlite", "postgresql", ...)."""
    return SQLITE if backend == "sqlite" else POSTGRES


def kind_of_url(url: str) -> DatabaseKind:
    return kind_of(make_url(url).get_backend_name())
