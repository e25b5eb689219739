"""Runtime: wires one service process from the parts below (database, relay, consumer, gRPC
app, security, telemetry) and runs its command line. The composition root.

May import every other package of services.common; nothing in services.common imports it.
"""
