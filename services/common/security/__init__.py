"""Security: who is calling (bearer tokens), what they may do, TLS, and the start-up policy
that refuses an insecure process off loopback.

May import serving (to answer with gRPC errors) and the leaves of services.common.
"""
