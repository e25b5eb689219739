"""Messaging: topics as a type, CloudEvents over Kafka, Kafka clients, inbox, outbox, journal,
the consumer (its Kafka client in `consumer`, the transactional apply in `apply`, a record
and its decoding in `consumed`, retries in `retries`, the last-resort dead letter in
`last_resort`) and the outbox relay (its loop in `relay`, claims per database in `claims`,
errors in `delivery`).

May import persistence, observability and the leaves of services.common. The topic table
of the saga is not here: the services pass theirs in.
"""
