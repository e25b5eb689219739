"""One way to start the whole system: Kafka, the databases and N replicas of each service.

Owns the stack's layout (config: the services, their addresses per replica, free ports),
one service replica as a background process (processes), where the two databases live
on each database kind (datastores: one class per kind), the `Stack` that starts and
stops it all (stack) and make's command line (cli, `python -m deploy.stack`).

May import deploy's other packages (deploy.kafka, deploy.postgres), services (for the
TLS and auth settings a client needs) and gen. Inside it imports point one way:
config < processes, datastores < stack < cli; nothing imports the command line.
Services never import deploy.
"""
