"""Alembic environment of this service's migrations (see persistence.migrations_env)."""

from services.common.persistence.migrations_env import run_migrations

run_migrations()
