"""How the `paysaga` command prints: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import json
import string
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from google.protobuf.json_format import MessageToDict
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Columns aligned on the widest cell; an empty table says so."""
    if not rows:
        return "(none)"
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(line.rstrip() for line in lines)


def to_dict(message: Message) -> dict[str, Any]:
    return MessageToDict(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )


def dumps(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


def when(stamp: Timestamp) -> datetime | None:
    """A Timestamp as an aware UTC datetime, or None if unset (all zero)."""
    if not stamp.seconds and not stamp.nanos:
        return None
    return stamp.ToDatetime(UTC)


def clock(moment: datetime | None) -> str:
    """HH:MM:SS.mmm (UTC), or - ."""
    return moment.strftime("%H:%M:%S.%f")[:-3] if moment else "-"


def stamp_text(moment: datetime | None) -> str:
    """YYYY-MM-DD HH:MM:SS (UTC), or - ."""
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else "-"


def duration(seconds: float) -> str:
    """A duration a person reads at a glance: 850ms, 4.2s, 03:41, 2h05m, 3d04h."""
    if seconds < 0:
        return "-" + duration(-seconds)
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60:02d}:{whole % 60:02d}"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def event_name(event_type: str) -> str:
    """paysaga.v1.OrderPurchased -> OrderPurchased."""
    return event_type.rsplit(".", 1)[-1]


def short(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


_PRINTABLE = set(string.printable) - set("\t\n\r\x0b\x0c")


def show_bytes(data: bytes) -> str:
    """Text if the bytes are printable UTF-8, else hex."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return "hex:" + data.hex()
    return text if set(text) <= _PRINTABLE else "hex:" + data.hex()


def hexdump(data: bytes, width: int = 16) -> str:
    """Offset, hex and printable characters, `width` bytes a line."""
    lines = []
    for at in range(0, len(data), width):
        chunk = data[at : at + width]
        printable = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{at:08x}  {chunk.hex(' '):<{width * 3}}  {printable}")
    return "\n".join(lines) or "(empty)"
