"""Dead letters for operators: list them, read one, send them back to be applied once.

A dead letter is recorded (table dead_letter) in the transaction that dead-letters it,
besides going to `<topic>.dlt`, so listing and reading never scan a topic, and a redrive
is one transaction of this service: the record goes back to its original topic through
the outbox (it cannot be lost), carrying a redrive header whose value is
`redrive_id(dead letter id)`; the dead letter's redrive count, time and requester and a
row in dead_letter_redrive are written with it. The consumer keys a redriven record in
its inbox by that redrive id, so it is applied once however many times it is redriven.
A redriven record that fails again becomes a new dead letter (new coordinates, new id).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlmodel import Session, col

from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import (
    REDRIVE_HEADER,
    DeadLetter,
    Redrive,
    StepKind,
    redrive_id,
)
from services.common.messaging.outbox import DLT_HEADERS, OutboxWriter, decode_headers
from services.common.persistence.db import Database
from services.common.timeutil import utcnow

#: Most dead letters one list or one redrive handles.
MAX_BATCH = 1000


class NoSuchDeadLetter(LookupError):
    """No dead letter with that id in this service."""


class AlreadyConsumed(RuntimeError):
    """A redriven copy of the dead letter was consumed already: sending it again would be
    dropped as a duplicate, so nothing is sent."""


@dataclass(frozen=True)
class Redriven:
    id: str
    redrive_id: str
    redrive_count: int


def list_dead_letters(
    db: Database, *, topic: str = "", since: datetime | None = None, limit: int = 100
) -> list[DeadLetter]:
    """Dead letters newest first, optionally of one original topic / since a time."""
    query = select(DeadLetter)
    if topic:
        query = query.where(col(DeadLetter.topic) == topic)
    if since is not None:
        query = query.where(col(DeadLetter.dead_lettered_at) >= since)
    query = query.order_by(col(DeadLetter.dead_lettered_at).desc(), col(DeadLetter.id).desc())
    with db.read() as session:
        return list(session.execute(query.limit(min(limit, MAX_BATCH))).scalars())


def get_dead_letter(db: Database, dead_letter_id: str) -> DeadLetter:
    with db.read() as session:
        found = session.get(DeadLetter, dead_letter_id)
    if found is None:
        raise NoSuchDeadLetter(f"no dead letter {dead_letter_id!r} here")
    return found


def count_by_topic(session: Session) -> dict[str, int]:
    """Dead letters never redriven, per original topic."""
    rows = session.execute(
        select(col(DeadLetter.topic), func.count())
        .where(col(DeadLetter.redrive_count) == 0)
        .group_by(col(DeadLetter.topic))
    )
    return {topic: count for topic, count in rows.all()}


def redrive(
    db: Database, *, ids: Sequence[str] = (), topic: str = "", requested_by: str
) -> list[Redriven]:
    """Send the named dead letters (or, with `topic` and no ids, every one of that topic not
    redriven yet) back to their topic, in one transaction. Raises NoSuchDeadLetter naming
    the ids this service does not hold, before sending anything."""
    now = utcnow()
    with db.write() as session:
        query = select(DeadLetter)
        if ids:
            query = query.where(col(DeadLetter.id).in_(set(ids)))
        else:
            query = query.where(col(DeadLetter.topic) == topic).where(
                col(DeadLetter.redrive_count) == 0
            )
        found = {
            d.id: d
            for d in session.execute(
                query.order_by(col(DeadLetter.dead_lettered_at)).limit(MAX_BATCH)
            ).scalars()
        }
        missing = [i for i in ids if i not in found]
        if missing:
            raise NoSuchDeadLetter(f"no dead letter(s) {', '.join(map(repr, missing))} here")
        consumed = _copies_consumed(session, found.values())
        if consumed:
            raise AlreadyConsumed(
                f"dead letter(s) {', '.join(consumed)} were redriven and the copy consumed "
                "already (applied, or dead-lettered again under a new id: see `paysaga dlq "
                "list`); redrive that new dead letter instead"
            )
        outbox = OutboxWriter()
        done = [_stage(session, outbox, letter, requested_by, now) for letter in found.values()]
        outbox.write(session)
    return done


def _copies_consumed(session: Session, letters: Iterable[DeadLetter]) -> list[str]:
    """Ids of those dead letters whose redriven copy is in the inbox (was consumed)."""
    by_key = {redrive_id(letter.id): letter.id for letter in letters}
    if not by_key:
        return []
    seen = session.execute(
        select(col(ProcessedEvent.event_id)).where(col(ProcessedEvent.event_id).in_(by_key))
    ).scalars()
    return sorted(by_key[key] for key in seen)


def _stage(
    session: Session, outbox: OutboxWriter, letter: DeadLetter, by: str, now: datetime
) -> Redriven:
    key = redrive_id(letter.id)
    skip = {*DLT_HEADERS, REDRIVE_HEADER}
    headers: list[tuple[str, str | bytes | None]] = [
        (name, value) for name, value in decode_headers(letter.headers) if name not in skip
    ]
    headers.append((REDRIVE_HEADER, key.encode()))
    outbox.add_record(
        topic=letter.topic, key=letter.key, value=letter.value, headers=headers, event_id=key
    )
    count = letter.redrive_count + 1
    session.execute(  # counted in the database: two replicas redriving at once add up
        update(DeadLetter)
        .where(col(DeadLetter.id) == letter.id)
        .values(redrive_count=col(DeadLetter.redrive_count) + 1, redriven_at=now, redriven_by=by)
    )
    session.add(Redrive(dead_letter_id=letter.id, redrive_id=key, redriven_at=now, redriven_by=by))
    outbox.journal.step(
        StepKind.REDRIVEN,
        order_id=letter.order_id,
        topic=letter.topic,
        event_id=letter.event_id,
        event_type=letter.event_type,
        detail=f"by {by} (redrive {count}, id {key})",
    )
    return Redriven(letter.id, key, count)
