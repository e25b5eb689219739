"""The saga's contract both services speak: which events travel on which topic.

Domain, not mechanism: services.order, services.payment, services.cli, deploy and bench
import it; services.common never does (the services hand the table in). May import
services.common.messaging (the Topic type) and the generated stubs.
"""
