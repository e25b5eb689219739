"""Persistence: the database engine, schema migrations, group commit and shared column types.

May import observability and the leaves of services.common; knows nothing of Kafka.
"""
