"""Kafka record headers as the services read them: a list of (name, value) pairs."""

from __future__ import annotations

Headers = list[tuple[str, str | bytes | None]]


def header_text(value: str | bytes | None) -> str:
    """A header value as text (undecodable bytes replaced)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value or ""


def header_dict(headers: Headers | None) -> dict[str, str]:
    """Kafka headers as a dict of text (undecodable bytes replaced, last value wins)."""
    return {k: header_text(v) for k, v in headers or []}
