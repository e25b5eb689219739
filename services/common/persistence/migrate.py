"""Schema migrations (Alembic, one history per service) and the idempotent seed step.

`python -m services.<name> migrate` upgrades the service's database to the newest
revision; N replicas may run it at once: on PostgreSQL they queue on an advisory lock,
on SQLite (one replica) on a lock file. A service refuses to start on a database whose
schema is not at the newest revision, and says which command fixes it.
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, create_engine, inspect
from sqlalchemy.engine.url import make_url

from services.common.persistence.kinds import kind_of_url

log = logging.getLogger(__name__)


class SchemaNotCurrent(RuntimeError):
    """The database's schema is not the one this code needs."""


def _config(script_location: Path) -> Config:
    config = Config()
    config.set_main_option("script_location", str(script_location))
    return config


def migrate(url: str, script_location: Path) -> str:
    """Upgrade the database at `url` to the newest revision; return that revision."""
    config = _config(script_location)
    engine = create_engine(url)
    try:
        with engine.connect() as connection, kind_of_url(url).migration_lock(connection, url):
            _refuse_unversioned(connection, url)
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            connection.commit()
            return current_revision(connection) or ""
    finally:
        engine.dispose()


def _refuse_unversioned(connection: Connection, url: str) -> None:
    """A database whose tables were made before migrations existed cannot be upgraded."""
    tables = set(inspect(connection).get_table_names())
    if "outbox" in tables and "alembic_version" not in tables:
        raise SchemaNotCurrent(
            f"{make_url(url).render_as_string()} holds tables made before paysaga had "
            "migrations (release 0.1): there is no upgrade path from them. Let its sagas "
            "finish, then remove the database (SQLite: delete the file; `make down` first) "
            "and migrate again"
        )


def current_revision(connection: Connection) -> str | None:
    return MigrationContext.configure(connection).get_current_revision()


def check_schema(url: str, script_location: Path, service: str) -> None:
    """Raise SchemaNotCurrent unless the database is at the newest revision."""
    head = ScriptDirectory.from_config(_config(script_location)).get_current_head()
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            current = current_revision(connection)
    finally:
        engine.dispose()
    if current != head:
        raise SchemaNotCurrent(
            f"the {service} database ({make_url(url).render_as_string()}) is at schema revision "
            f"{current or '(none)'}, this code needs {head}: run "
            f"`python -m services.{service} migrate` (make up does)"
        )
