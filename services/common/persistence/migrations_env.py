"""The body of each service's Alembic env.py: run migrations on the connection we were given."""

from __future__ import annotations

from alembic import context


def run_migrations() -> None:
    """Online migrations only, on the connection `services.common.persistence.migrate` opened."""
    connection = context.config.attributes["connection"]
    context.configure(connection=connection, render_as_batch=True, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()
