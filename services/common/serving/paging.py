"""Page tokens for List RPCs: opaque, URL-safe, and checked when they come back.

A token is the position after the last row of a page: the row's (time, id) in the
newest-first order (or oldest-first: the admin lists), so pages stay stable while new rows
arrive.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, or_, true

T = TypeVar("T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 1000


class BadPageRequest(ValueError):
    """A page_size or page_token the caller must fix."""


@dataclass(frozen=True)
class Cursor:
    """Resume after the row with this creation time and id."""

    created_at: datetime
    id: str

    def encode(self, scope: str) -> str:
        raw = json.dumps({"s": scope, "t": self.created_at.isoformat(), "i": self.id})
        return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str, scope: str) -> Cursor:
        """Parse a token made by `encode` for the same scope (the same filters)."""
        try:
            padded = token + "=" * (-len(token) % 4)
            data = json.loads(base64.urlsafe_b64decode(padded.encode()))
            cursor = cls(created_at=datetime.fromisoformat(data["t"]), id=str(data["i"]))
            token_scope = data["s"]
            if cursor.created_at.tzinfo is None:
                raise ValueError("a page_token time always has a timezone")
        except (ValueError, KeyError, TypeError) as exc:
            raise BadPageRequest(
                "page_token is malformed: pass the next_page_token of a previous response"
            ) from exc
        if token_scope != scope:
            raise BadPageRequest("page_token was made for other filters: keep filters unchanged")
        return cursor


def page_size(requested: int) -> int:
    """The page size to use: the default for 0, an error outside 1..MAX_PAGE_SIZE."""
    if requested == 0:
        return DEFAULT_PAGE_SIZE
    if requested < 0 or requested > MAX_PAGE_SIZE:
        raise BadPageRequest(f"page_size must be between 1 and {MAX_PAGE_SIZE}, got {requested}")
    return requested


def newest_first_after(created_at: Any, row_id: Any, cursor: Cursor | None) -> ColumnElement[bool]:
    """The SQL condition for rows after `cursor` in (created_at, id) descending order."""
    if cursor is None:
        return true()
    return or_(
        created_at < cursor.created_at, and_(created_at == cursor.created_at, row_id < cursor.id)
    )


def oldest_first_after(created_at: Any, row_id: Any, cursor: Cursor | None) -> ColumnElement[bool]:
    """The SQL condition for rows after `cursor` in (created_at, id) ascending order."""
    if cursor is None:
        return true()
    return or_(
        created_at > cursor.created_at, and_(created_at == cursor.created_at, row_id > cursor.id)
    )


def keyset_page(
    rows: Sequence[T], limit: int, scope: str, key: Callable[[T], tuple[datetime, Any]]
) -> tuple[Sequence[T], str]:
    """Given up to limit+1 rows, the page to return and the token for the next one ("" on
    the last page); `key` gives a row's (time, id), the order the rows were read in."""
    page = rows[:limit]
    if len(rows) <= limit:
        return page, ""
    moment, row_id = key(page[-1])
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return page, Cursor(moment, str(row_id)).encode(scope)


def split_page(rows: Sequence[T], limit: int, scope: str) -> tuple[Sequence[T], str]:
    """Given up to limit+1 rows, the page to return and the token for the next one."""
    page = rows[:limit]
    if len(rows) <= limit:
        return page, ""
    last = page[-1]
    return page, Cursor(last.created_at, last.id).encode(scope)  # type: ignore[attr-defined]


def parse_page(requested_size: int, token: str, scope: str) -> tuple[int, Cursor | None]:
    """A List request's (limit, cursor); raises BadPageRequest saying what to fix."""
    return page_size(requested_size), Cursor.decode(token, scope) if token else None
