"""Role paysaga and its databases, made with the server's own psql as the superuser.

Only the standard library is used: no driver, just psql over TCP to 127.0.0.1.
"""

from __future__ import annotations

import re
import subprocess
import uuid
from pathlib import Path

from deploy.postgres.data_folder import SUPERUSER
from deploy.postgres.install import PostgresRuntimeError, clean_env

ROLE = "paysaga"
DATABASES = {"order": "paysaga_order", "payment": "paysaga_payment"}
_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


def database_name(database: str) -> str:
    """'order' -> 'paysaga_order', 'payment' -> 'paysaga_payment'; other names unchanged."""
    return DATABASES.get(database, database)


def database_url(port: int, database: str = "order") -> str:
    """The SQLAlchemy URL (psycopg 3 driver) for role paysaga on one database."""
    return f"postgresql+psycopg://{ROLE}@127.0.0.1:{port}/{database_name(database)}"


def checked_name(name: str) -> str:
    """`name` if it is a plain database name (no quoting needed), else PostgresRuntimeError."""
    if not _NAME.fullmatch(name):
        raise PostgresRuntimeError(f"database name {name!r} must match {_NAME.pattern}")
    return name


def random_database_name() -> str:
    """A new random name for a database of one test: paysaga_test_<12 hex digits>."""
    return f"paysaga_test_{uuid.uuid4().hex[:12]}"


class Psql:
    """The superuser's psql on the server at 127.0.0.1:`port`."""

    def __init__(self, bin_dir: Path, port: int) -> None:
        self.bin_dir = bin_dir
        self.port = port

    def run(self, sql: str, database: str = "postgres") -> subprocess.CompletedProcess[str]:
        """Run SQL on a database (by its real name) and return psql's result as it is."""
        command = [str(self.bin_dir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1"]
        command += ["-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database]
        env = {**clean_env(), "PGCONNECT_TIMEOUT": "2"}
        return subprocess.run([*command, "-c", sql], capture_output=True, text=True, env=env)

    def query(self, sql: str, database: str = "postgres") -> str:
        """Its rows as psql's unaligned text (`a|b` per line); PostgresRuntimeError if it fails."""
        done = self.run(sql, database)
        if done.returncode != 0:
            raise PostgresRuntimeError(f"psql failed on {sql!r}: {done.stderr.strip()}")
        return done.stdout.strip()

    def ensure_role(self) -> bool:
        """Create role paysaga (it logs in, it is no superuser) unless it exists; True if made."""
        if self.query(f"SELECT 1 FROM pg_roles WHERE rolname = '{ROLE}'"):
            return False
        self.query(f'CREATE ROLE "{ROLE}" LOGIN')
        return True

    def create_database(self, name: str) -> None:
        """A new empty database `name` owned by paysaga."""
        self.query(f'CREATE DATABASE "{name}" OWNER "{ROLE}" TEMPLATE template0')

    def ensure_databases(self) -> list[str]:
        """Create role paysaga and its two databases if missing; return what was created."""
        created = [f"role {ROLE}"] if self.ensure_role() else []
        for name in DATABASES.values():
            if not self.query(f"SELECT 1 FROM pg_database WHERE datname = '{name}'"):
                self.create_database(name)
                created.append(f"database {name}")
        return created

    def drop_database(self, name: str) -> None:
        """Drop database `name` if it exists, closing its connections."""
        self.query(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
