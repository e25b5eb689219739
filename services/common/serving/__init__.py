"""Serving: the asyncio gRPC app (health, reflection, workers, drain), error mapping and
page tokens for List RPCs.

May import observability and the leaves of services.common.
"""
