"""Alembic environment of this service's migrations (see services.common.migrations_env)."""

from services.common.migrations_env import run_migrations

run_migrations()
