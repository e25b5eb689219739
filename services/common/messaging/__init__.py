"""Messaging: topics as a type, CloudEvents over Kafka, Kafka clients, inbox, outbox, journal,
the consumer loop and the outbox relay.

May import persistence, observability and the leaves of services.common. The topic table
of the saga is not here: the services pass theirs in.
"""
