"""Mechanisms both services share, in packages by concern; nothing here knows the saga's domain.

Layers, each importing only those below it (the import contract in `.importlinter`
checks this in `make lint`):

    auth           `python -m services.common.auth token`, the token command's earlier name
    runtime        assembly, entry point, telemetry: wires a process from the parts below
    operations     admin API, dead letters, backlog, retention: what an operator reaches
    security       identity, tokens, authorization, TLS, the start-up policy
    serving        the gRPC app, error mapping, page tokens
    messaging      topics as a type, CloudEvents, Kafka clients, inbox, outbox, journal,
                   consumer (Kafka side), apply (transactions, dead letters), relay,
                   claims (one strategy per database), delivery (error classes)
    persistence    database, migrations, group commit, column types
    observability  metrics, traces, logs, gRPC telemetry (hooks the layers above call)
    (leaves)       settings, headers, time, money, crash points, workers, memo, ids
                   (time-ordered UUIDs): import nothing here

Domain things (the saga's topic table, order and payment metrics) live with the services
and are passed into these mechanisms.
"""
