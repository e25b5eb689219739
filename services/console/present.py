"""How the pages show things: UTC times with their age, durations, statuses, money, steps.
The Jinja environment gets these as filters (see services.console.app)."""

from __future__ import annotations

from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from paysaga.admin.v1 import admin_pb2
from paysaga.v1 import orders_pb2, payments_pb2
from services.cli.render import duration, hexdump, show_bytes, when
from services.common.money import format_cents

STEP_NAMES: dict[int, str] = {
    admin_pb2.STEP_KIND_ORDER_CREATED: "order created",
    admin_pb2.STEP_KIND_PRODUCED: "produced",
    admin_pb2.STEP_KIND_APPLIED: "applied",
    admin_pb2.STEP_KIND_DEAD_LETTERED: "dead-lettered",
    admin_pb2.STEP_KIND_REDRIVEN: "redriven",
}
#: The order statuses a filter can choose, by the name a page shows.
STATUSES = {
    "CREATED": orders_pb2.ORDER_STATUS_CREATED,
    "COMPLETED": orders_pb2.ORDER_STATUS_COMPLETED,
    "FAILED": orders_pb2.ORDER_STATUS_FAILED,
}


def moment(value: Timestamp | datetime | None) -> datetime | None:
    if isinstance(value, Timestamp):
        return when(value)
    return value


def utc(value: Timestamp | datetime | None) -> str:
    """2026-11-26 09:00:01.250 UTC, or - ."""
    found = moment(value)
    return found.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC" if found else "-"


def iso(value: Timestamp | datetime | None) -> str:
    found = moment(value)
    return found.astimezone(UTC).isoformat().replace("+00:00", "Z") if found else ""


def ago(value: Timestamp | datetime | None, now: datetime | None = None) -> str:
    """ "4.2s ago", "in 12.0s" (the pages update it every second)."""
    found = moment(value)
    if found is None:
        return ""
    seconds = ((now or datetime.now(UTC)) - found).total_seconds()
    return f"{duration(seconds)} ago" if seconds >= 0 else f"in {duration(-seconds)}"


def seconds_between(a: Timestamp | datetime | None, b: Timestamp | datetime | None) -> str:
    """The time from a to b, or "" if either is unknown."""
    first, second = moment(a), moment(b)
    if first is None or second is None:
        return ""
    return duration((second - first).total_seconds())


def status_name(status: int) -> str:
    return orders_pb2.OrderStatus.Name(status).removeprefix("ORDER_STATUS_")


def kind_name(kind: int) -> str:
    return payments_pb2.TransactionKind.Name(kind or 1).removeprefix("TRANSACTION_KIND_")


def step_name(kind: int) -> str:
    return STEP_NAMES.get(kind, "?")


def event_name(event_type: str) -> str:
    """paysaga.v1.OrderPurchased -> OrderPurchased."""
    return event_type.rsplit(".", 1)[-1]


def money(cents: int) -> str:
    return format_cents(cents)


def trace_id(traceparent: bytes | str) -> str:
    """The trace id of a W3C traceparent (00-<trace id>-<span id>-<flags>), or ""."""
    text = traceparent.decode(errors="replace") if isinstance(traceparent, bytes) else traceparent
    parts = text.strip().split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


FILTERS = {
    "utc": utc,
    "iso": iso,
    "ago": ago,
    "status_name": status_name,
    "kind_name": kind_name,
    "step_name": step_name,
    "event_name": event_name,
    "money": money,
    "show_bytes": show_bytes,
    "hexdump": hexdump,
    "duration": duration,
}
