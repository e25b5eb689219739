"""Mechanisms both services share: settings, logging, database, Kafka, inbox, outbox, relay."""
