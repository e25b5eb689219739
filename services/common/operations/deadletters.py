"""Dead letters for operators: list them, read one, send them back to be applied once.

A dead letter is recorded (table dead_letter) in the transaction that dead-letters it,
besides going to `<topic>.dlt`, so listing and reading never scan a topic, and a redrive
is one transaction of this service: the record goes back to its original topic through
the outbox (it cannot be lost), carrying a redrive header whose value is
`redrive_id(dead letter id)`; the dead letter's redrive count, time and requester and a
row in dead_letter_redrive are written with it. The consumer keys a redriven record in
its inbox by that redrive id, so it is applied once however many times it is redriven.
A redriven record that fails again becomes a new dead letter (new coordinates, new id).

Redrive safety:
- A redriven record also carries how many times its record has been redriven in all
  (REDRIVE_COUNT_HEADER) and the id of the first dead letter it was
  (REDRIVE_ORIGIN_HEADER). A dead letter it becomes again keeps both, so a record that
  keeps failing is counted across its dead letters: past `max_redrives` it is refused
  (RedriveLimit), or left out of an `all` redrive, with what to do.
- Dead letters are sent oldest first: per original partition in the original records'
  offset order (a dead letter of a redriven copy takes its first dead letter's place),
  the partitions merged by the records' ce_time. Records of one key were on one
  partition: they go back in the order they were first produced.
- `dry_run` selects, orders and checks exactly as a redrive does, and writes nothing.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlmodel import Session, col

from services.common.headers import Headers, header_dict
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import (
    REDRIVE_HEADER,
    DeadLetter,
    Redrive,
    StepKind,
    parse_time,
    redrive_id,
)
from services.common.messaging.outbox import DLT_HEADERS, OutboxWriter, decode_headers
from services.common.persistence.db import Database
from services.common.serving.grpc_errors import echo
from services.common.serving.paging import Cursor, newest_first_after
from services.common.timeutil import utcnow

#: Most dead letters one list or one redrive handles.
MAX_BATCH = 1000

#: How many times a redriven record's record has been redriven in all, this time included.
REDRIVE_COUNT_HEADER = "paysaga_redrive_count"
#: The id of the first dead letter a redriven record was (its original coordinates).
REDRIVE_ORIGIN_HEADER = "paysaga_redrive_origin"
_OUR_HEADERS = {*DLT_HEADERS, REDRIVE_HEADER, REDRIVE_COUNT_HEADER, REDRIVE_ORIGIN_HEADER}


class NoSuchDeadLetter(LookupError):
    """No dead letter with that id in this service."""


class AlreadyConsumed(RuntimeError):
    """A redriven copy of the dead letter was consumed already: sending it again would be
    dropped as a duplicate, so nothing is sent."""


class RedriveLimit(RuntimeError):
    """A named dead letter's record was redriven as often as allowed: nothing is sent."""


@dataclass(frozen=True)
class Redriven:
    """One dead letter sent back (or, in a dry run, that would be; or left out)."""

    id: str
    redrive_id: str
    #: This dead letter's redrives, this one included.
    redrive_count: int
    topic: str
    partition: int
    offset: int
    event_id: str
    event_type: str
    key: bytes | None
    reason: str
    order_id: str
    #: Why it is sent, or why not.
    note: str
    #: Its record's redrives in all, this one included (what the loop guard counts).
    record_redrive_count: int


@dataclass(frozen=True)
class RedrivePlan:
    """What a redrive sends, in order, and what it leaves out (an `all` redrive only)."""

    send: list[Redriven]
    left_out: list[Redriven]


def list_dead_letters(
    db: Database,
    *,
    topic: str = "",
    since: datetime | None = None,
    limit: int = 100,
    after: Cursor | None = None,
) -> list[DeadLetter]:
    """Dead letters newest first, optionally of one original topic / since a time, after a
    page's cursor (at most MAX_BATCH + 1: a page and whether there is another)."""
    query = select(DeadLetter).where(
        newest_first_after(col(DeadLetter.dead_lettered_at), col(DeadLetter.id), after)
    )
    if topic:
        query = query.where(col(DeadLetter.topic) == topic)
    if since is not None:
        query = query.where(col(DeadLetter.dead_lettered_at) >= since)
    query = query.order_by(col(DeadLetter.dead_lettered_at).desc(), col(DeadLetter.id).desc())
    with db.read() as session:
        return list(session.execute(query.limit(min(limit, MAX_BATCH + 1))).scalars())


def get_dead_letter(db: Database, dead_letter_id: str) -> DeadLetter:
    with db.read() as session:
        found = session.get(DeadLetter, dead_letter_id)
    if found is None:
        raise NoSuchDeadLetter(f"no dead letter {echo(dead_letter_id)} here")
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
    db: Database,
    *,
    ids: Sequence[str] = (),
    topic: str = "",
    requested_by: str,
    max_redrives: int = 3,
    limit_setting: str = "<SVC>_REDRIVE_MAX",
    dry_run: bool = False,
) -> RedrivePlan:
    """Send the named dead letters (or, with `topic` and no ids, every one of that topic not
    redriven yet) back to their topic, oldest first, in one transaction; with `dry_run`,
    only say what would be sent.

    Raises, before sending anything: NoSuchDeadLetter naming the ids this service does not
    hold; AlreadyConsumed; RedriveLimit naming the dead letters whose record was redriven
    `max_redrives` times already (an `all` redrive leaves those out instead). The
    messages name `limit_setting`, the setting that raises the limit.
    """
    now = utcnow()
    with db.read() if dry_run else db.write() as session:
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
            named = ", ".join(echo(i) for i in missing[:5])
            more = f" and {len(missing) - 5} more" if len(missing) > 5 else ""
            raise NoSuchDeadLetter(f"no dead letter(s) {named}{more} here")
        consumed = _copies_consumed(session, found.values())
        if consumed:
            raise AlreadyConsumed(
                f"dead letter(s) {', '.join(consumed)} were redriven and the copy consumed "
                "already (applied, or dead-lettered again under a new id: see `paysaga dlq "
                "list`); redrive that new dead letter instead"
            )
        plan = _plan(in_time_order(found.values()), bool(ids), max_redrives, limit_setting)
        if ids and plan.left_out:
            raise RedriveLimit("; ".join(item.note for item in plan.left_out))
        if dry_run:
            return plan
        outbox = OutboxWriter(None)
        for item in plan.send:
            _stage(session, outbox, found[item.id], item, requested_by, now)
        outbox.write(session)
    return plan


def _lineage(letter: DeadLetter) -> tuple[int, str]:
    """(How many times its record was redriven before it became this dead letter, the id of
    the first dead letter it was). A record we never redrove: (0, its own id)."""
    found = _header_texts(letter)
    count = found.get(REDRIVE_COUNT_HEADER, "")
    origin = found.get(REDRIVE_ORIGIN_HEADER, "")
    return (int(count) if count.isascii() and count.isdigit() else 0), origin or letter.id


def _coordinates(dead_letter_id: str, letter: DeadLetter) -> tuple[str, int, int]:
    """(topic, partition, offset) of a dead letter id; the letter's own if it is not one."""
    topic, _, rest = dead_letter_id.partition(":")
    partition, _, offset = rest.partition(":")
    try:
        return topic, int(partition), int(offset)
    except ValueError:
        return letter.topic, letter.kafka_partition, letter.kafka_offset


def in_time_order(letters: Iterable[DeadLetter]) -> list[DeadLetter]:
    """Oldest first: per original partition in the original records' offset order, the
    partitions merged by the records' time (ce_time, else when they were dead-lettered)."""
    runs: dict[tuple[str, int], list[tuple[datetime, int, str, DeadLetter]]] = {}
    for letter in letters:
        topic, partition, offset = _coordinates(_lineage(letter)[1], letter)
        ce_time = _header_texts(letter).get("ce_time", "")
        moment = parse_time(ce_time) or _aware(letter.dead_lettered_at)
        runs.setdefault((topic, partition), []).append((moment, offset, letter.id, letter))
    ordered = [sorted(run, key=lambda item: (item[1], item[2])) for run in runs.values()]
    merged = heapq.merge(*ordered, key=lambda item: (item[0], item[2]))
    return [item[3] for item in merged]


def _header_texts(letter: DeadLetter) -> dict[str, str]:
    """The dead letter's headers as text; none if they do not decode (kept as they came,
    they never stop a redrive's plan)."""
    try:
        headers: Headers = list(decode_headers(letter.headers))
    except Exception:
        return {}
    return header_dict(headers)


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _plan(
    letters: Sequence[DeadLetter], named: bool, max_redrives: int, limit_setting: str
) -> RedrivePlan:
    plan = RedrivePlan(send=[], left_out=[])
    for letter in letters:
        before, origin = _lineage(letter)
        count = before + letter.redrive_count + 1
        found = _header_texts(letter)
        first = f", first dead letter {origin}" if origin != letter.id else ""
        if count > max_redrives:
            note = (
                f"dead letter {letter.id}: its record was redriven {count - 1} time(s) "
                f"already{first}, the most {limit_setting} ({max_redrives}) allows, and "
                f"keeps failing. Read why with `paysaga dlq show {letter.id}` and fix the "
                f"cause; to send it once more after that, raise {limit_setting}"
            )
        else:
            why = "named" if named else "not redriven yet"
            note = f"{why}; redrive {count} of its record (at most {max_redrives}){first}"
        item = Redriven(
            id=letter.id,
            redrive_id=redrive_id(letter.id),
            redrive_count=letter.redrive_count + 1,
            topic=letter.topic,
            partition=letter.kafka_partition,
            offset=letter.kafka_offset,
            event_id=letter.event_id,
            event_type=letter.event_type or found.get("ce_type", ""),
            key=letter.key,
            reason=letter.reason,
            order_id=letter.order_id,
            note=note,
            record_redrive_count=count,
        )
        (plan.left_out if count > max_redrives else plan.send).append(item)
    return plan


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
    session: Session,
    outbox: OutboxWriter,
    letter: DeadLetter,
    item: Redriven,
    by: str,
    now: datetime,
) -> None:
    key = item.redrive_id
    headers: list[tuple[str, str | bytes | None]] = [
        (name, value) for name, value in decode_headers(letter.headers) if name not in _OUR_HEADERS
    ]
    headers += [
        (REDRIVE_HEADER, key.encode()),
        (REDRIVE_COUNT_HEADER, str(item.record_redrive_count).encode()),
        (REDRIVE_ORIGIN_HEADER, _lineage(letter)[1].encode()),
    ]
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
        detail=f"by {by} (redrive {count}, redrive {item.record_redrive_count} of its "
        f"record, id {key})",
    )
