"""Operations: the shared admin API, dead letters and redrive, backlog and lag, retention.

May import security, serving, messaging, persistence, observability and the leaves.
"""
