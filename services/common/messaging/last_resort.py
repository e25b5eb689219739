"""The dead letter of last resort: written when a record's full dead letter cannot be.

A full dead letter reads the record's CloudEvents headers (its event id, type, order, time)
for the journal. When even that fails (a value the database refuses, a header it cannot
encode), the consumer writes this one instead, in a transaction of its own, and parses
nothing: the record's coordinates, its key, value and headers as bytes (blob columns take
anything) and the error. It is a `dead_letter` row like any other (so `paysaga dlq` lists,
shows and redrives it) and a record for `<topic>.dlt` through the outbox; the record's
coordinates go into the inbox, so a redelivered copy is dropped, and the partition moves on.
"""

from __future__ import annotations

import logging

from services.common.headers import Headers
from services.common.messaging import inbox
from services.common.messaging.journal import storable_text
from services.common.messaging.outbox import OutboxWriter, dead_letter_headers, encode_headers
from services.common.persistence.db import Database

log = logging.getLogger(__name__)


def write_last_resort(
    db: Database,
    *,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    headers: Headers,
    reason: str,
    inbox_id: str,
) -> bool:
    """Dead-letter the record at these coordinates with its bytes and `reason`, keyed in
    the inbox by `inbox_id` (its coordinates); False if that key was there already (the
    record was settled before: nothing is written)."""
    with db.write() as session:
        if not inbox.record_new(session, [(inbox_id, topic)]):
            return False
        try:
            encoded = encode_headers(headers)
        except Exception as exc:  # a header name UTF-8 cannot encode: keep the rest
            encoded, headers = b"", []
            reason = f"{reason}; its headers could not be kept: {type(exc).__name__}: {exc}"
        reason = storable_text(reason)
        outbox = OutboxWriter(None)
        outbox.add_record(
            topic=f"{topic}.dlt",
            key=key,
            value=value,
            headers=dead_letter_headers(
                headers, reason=reason, topic=topic, partition=partition, offset=offset
            ),
            event_id=inbox_id,
        )
        # No event id, type or order: reading them is what may have failed.
        outbox.journal.dead_letter(
            topic=topic,
            partition=partition,
            offset=offset,
            key=key,
            value=value,
            headers=encoded,
            reason=reason,
            event_id="",
            event_type="",
            order_id="",
        )
        outbox.write(session)
    log.warning(
        "event dead-lettered as a last resort",
        extra={"topic": topic, "partition": partition, "offset": offset, "reason": reason},
    )
    return True
