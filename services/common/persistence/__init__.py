"""Persistence: the database engine, schema migrations, group commit and shared column types.

What differs between SQLite and PostgreSQL is one class per kind (`kinds`), chosen once
from the URL. May import observability and the leaves of services.common; knows nothing
of Kafka.
"""
