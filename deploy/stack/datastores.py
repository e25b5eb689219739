"""Where a stack's two databases live, one class per database kind (DB=sqlite|postgres).

The stack never asks which kind it runs on: it asks its datastore for the database URLs,
whether replicas may share them, and to start, stop and report what holds them.

- `SqliteDatastore`: one file per service in the stack's home; nothing to start, and a
  file belongs to one process, so each service runs a single replica.
- `PostgresDatastore`: a PostgreSQL server (the one given, or its own under home/postgres)
  with databases paysaga_order and paysaga_payment; any number of replicas share them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from deploy.postgres.runtime import PostgresRuntime
from deploy.stack.config import SERVICES, Ports, StackConfigError, free_ports

DbKind = Literal["sqlite", "postgres"]
DB_KINDS: tuple[DbKind, ...] = ("sqlite", "postgres")


class Datastore(ABC):
    """The databases of a stack's services and what the stack must run for them."""

    #: The PostgreSQL server holding the databases, if they live on one.
    postgres: PostgresRuntime | None = None

    @classmethod
    @abstractmethod
    def for_stack(
        cls,
        home: Path,
        *,
        postgres: PostgresRuntime | None,
        ports: Ports,
        run_dir: Path,
        log_dir: Path,
        detach: bool,
    ) -> Datastore:
        """The datastore of a stack under `home` (`postgres`: a running server to use)."""

    @classmethod
    @abstractmethod
    def check_replicas(cls, replicas: int) -> None:
        """Raise StackConfigError unless `replicas` processes of a service can share one."""

    @abstractmethod
    def urls(self) -> dict[str, str]:
        """Each service's database URL by service name."""

    @abstractmethod
    def start(self) -> None:
        """Start what holds the databases and make them, unless it was given running."""

    @abstractmethod
    def stop(self) -> None:
        """Stop what start() started."""

    @abstractmethod
    def pids(self) -> dict[str, int]:
        """The running processes that hold the databases, by name."""


class SqliteDatastore(Datastore):
    """A SQLite file per service in the stack's home: <home>/order.db, <home>/payment.db."""

    def __init__(self, home: Path) -> None:
        self.home = home

    @classmethod
    def for_stack(
        cls,
        home: Path,
        *,
        postgres: PostgresRuntime | None,
        ports: Ports,
        run_dir: Path,
        log_dir: Path,
        detach: bool,
    ) -> SqliteDatastore:
        return cls(home)

    @classmethod
    def check_replicas(cls, replicas: int) -> None:
        if replicas > 1:
            raise StackConfigError(
                f"REPLICAS={replicas} needs a database every replica shares, and SQLite is one "
                f"process's file: use DB=postgres (e.g. `make up REPLICAS={replicas} DB=postgres`)"
            )

    def urls(self) -> dict[str, str]:
        return {spec.name: f"sqlite:///{self.home / spec.name}.db" for spec in SERVICES}

    def start(self) -> None:
        """Nothing runs: each service's first migration makes its file."""

    def stop(self) -> None:
        """Nothing runs: the files stay."""

    def pids(self) -> dict[str, int]:
        return {}


class PostgresDatastore(Datastore):
    """Databases paysaga_order and paysaga_payment on a PostgreSQL server.

    `own`: the stack starts and stops the server; a server it was given is used as it
    is and left running.
    """

    postgres: PostgresRuntime

    def __init__(self, postgres: PostgresRuntime, *, own: bool) -> None:
        self.postgres = postgres
        self.own = own

    @classmethod
    def for_stack(
        cls,
        home: Path,
        *,
        postgres: PostgresRuntime | None,
        ports: Ports,
        run_dir: Path,
        log_dir: Path,
        detach: bool,
    ) -> PostgresDatastore:
        if postgres is not None:
            return cls(postgres, own=False)
        server = PostgresRuntime(
            port=free_ports(1)[0] if ports == "free" else 5432,
            data_dir=home / "postgres",
            run_dir=run_dir,
            log_file=log_dir / "postgres.log",
            detach=detach,
        )
        return cls(server, own=True)

    @classmethod
    def check_replicas(cls, replicas: int) -> None:
        """Any number of replicas share the server's databases."""

    def urls(self) -> dict[str, str]:
        return {spec.name: self.postgres.url(spec.name) for spec in SERVICES}

    def start(self) -> None:
        if self.own:
            self.postgres.start()
            self.postgres.ensure_databases()

    def stop(self) -> None:
        if self.own:
            self.postgres.stop()

    def pids(self) -> dict[str, int]:
        pid = self.postgres.pid()
        return {} if pid is None else {"postgres": pid}


#: The datastore class of each database kind (the keys are DB_KINDS).
DATASTORES: Mapping[str, type[Datastore]] = {
    "sqlite": SqliteDatastore,
    "postgres": PostgresDatastore,
}


def fresh_databases(postgres: PostgresRuntime) -> dict[str, str]:
    """A new empty database for each service on a running server: their URLs (for tests)."""
    return {spec.name: postgres.create_database() for spec in SERVICES}
