"""Persistence: the database engine, schema migrations, group commit and shared column types.

SQLite's writers queue on a lock of their own, in the process and across the processes
that share one file (`writer_lock`); the file's worker process checkpoints its log off the
commit path (`checkpoints`); a commit wakes the outbox relays of the other processes
(`wakeup`). What differs between SQLite and PostgreSQL is one class per kind (`kinds`),
chosen once from the URL. The statements every transaction runs (BEGIN on SQLite, the
bulk inserts, the handlers' selects and updates) go to the driver's cursor (`driver`,
`bulk`, `prepared`), with SQLAlchemy's error handling. May import observability and the
leaves of services.common; knows nothing of Kafka.
"""
