"""Column types shared by both services' tables.

Every int64 of the contract (ids, user ids, money, sequences) is a BIGINT. On SQLite an
INTEGER column already holds 64 bits, and only an `INTEGER PRIMARY KEY` is the rowid that
AUTOINCREMENT needs, so the type is INTEGER there.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import BigInteger, Integer, LargeBinary
from sqlmodel import Field

BIGINT = BigInteger().with_variant(Integer(), "sqlite")


def int64(**kwargs: Any) -> Any:
    """A SQLModel field stored as BIGINT (an int64 of the contract)."""
    return Field(sa_type=BIGINT, **kwargs)


def blob(**kwargs: Any) -> Any:
    """A SQLModel field stored as raw bytes (BYTEA on PostgreSQL, BLOB on SQLite)."""
    return Field(sa_type=LargeBinary, **kwargs)
