"""Redrive safety over a real database of each kind: a dry run writes nothing, a record that
keeps failing is refused past the limit (counted across the dead letters it became), and
dead letters go back oldest first, per partition in the original records' order."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import col, select

from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import (
    REDRIVE_HEADER,
    TABLES,
    DeadLetter,
    Journal,
    Redrive,
    SagaStep,
)
from services.common.messaging.outbox import OutboxRecord, decode_headers, encode_headers
from services.common.operations import deadletters
from services.common.operations.deadletters import (
    REDRIVE_COUNT_HEADER,
    REDRIVE_ORIGIN_HEADER,
    RedriveLimit,
)
from services.common.persistence.db import Database
from services.common.timeutil import utcnow

pytestmark = pytest.mark.unit

T0 = utcnow() - timedelta(hours=1)


@pytest.fixture
def db(store_url: str) -> Database:
    database = Database(store_url, instance="payment-0")
    database.create_tables([OutboxRecord, ProcessedEvent, *TABLES])
    return database


def dead_letter(
    db: Database,
    partition: int,
    offset: int,
    *,
    produced_s: float,
    event_type: str = "paysaga.v1.OrderPurchased",
    extra: list[tuple[str, bytes]] | None = None,
) -> str:
    """Record a dead letter of `orders` as the consumer does; its id."""
    headers: list[tuple[str, str | bytes | None]] = [
        ("ce_id", f"evt-{partition}-{offset}".encode()),
        ("ce_type", event_type.encode()),
        ("ce_subject", f"order-{partition}-{offset}".encode()),
        ("ce_time", (T0 + timedelta(seconds=produced_s)).isoformat().encode()),
        *(extra or []),
    ]
    journal = Journal()
    journal.dead_letter(
        topic="orders",
        partition=partition,
        offset=offset,
        key=b"7",
        value=b"payload",
        headers=encode_headers(headers),
        reason="handler failed: boom",
        event_id=f"evt-{partition}-{offset}",
        event_type=event_type,
        order_id=f"order-{partition}-{offset}",
    )
    with db.write() as session:
        journal.write(session)
    return f"orders:{partition}:{offset}"


def sent(db: Database) -> list[OutboxRecord]:
    with db.read() as session:
        return list(session.exec(select(OutboxRecord).order_by(col(OutboxRecord.seq))))


def test_a_dry_run_says_what_would_be_sent_and_writes_nothing(db: Database) -> None:
    first = dead_letter(db, 1, 10, produced_s=0)
    plan = deadletters.redrive(db, ids=[first], requested_by="alice", dry_run=True)
    [item] = plan.send
    assert (item.id, item.topic, item.partition, item.offset) == (first, "orders", 1, 10)
    assert (item.event_id, item.event_type, item.key) == (
        "evt-1-10",
        "paysaga.v1.OrderPurchased",
        b"7",
    )
    assert item.reason == "handler failed: boom" and item.order_id == "order-1-10"
    assert item.note == "named; redrive 1 of its record (at most 3)"
    assert (item.redrive_count, item.record_redrive_count) == (1, 1)
    assert sent(db) == []
    with db.read() as session:
        assert session.get(DeadLetter, first).redrive_count == 0  # type: ignore[union-attr]
        assert list(session.exec(select(Redrive))) == []
        assert list(session.exec(select(SagaStep))) == []
    # The real one sends exactly what the dry run showed.
    done = deadletters.redrive(db, ids=[first], requested_by="alice")
    assert [(d.id, d.note) for d in done.send] == [(item.id, item.note)]
    [copy] = sent(db)
    headers = dict(decode_headers(copy.headers))
    assert headers[REDRIVE_HEADER] == f"redrive:{first}".encode()
    assert headers[REDRIVE_COUNT_HEADER] == b"1"
    assert headers[REDRIVE_ORIGIN_HEADER] == first.encode()


def test_a_record_that_keeps_failing_is_refused_past_the_limit(db: Database) -> None:
    # The record was redriven twice and failed each time: its third dead letter.
    looping = dead_letter(
        db,
        2,
        90,
        produced_s=0,
        extra=[
            (REDRIVE_HEADER, b"redrive:orders:2:50"),
            (REDRIVE_COUNT_HEADER, b"2"),
            (REDRIVE_ORIGIN_HEADER, b"orders:2:10"),
        ],
    )
    third = deadletters.redrive(db, ids=[looping], requested_by="alice", max_redrives=3)
    assert third.send[0].record_redrive_count == 3
    assert "first dead letter orders:2:10" in third.send[0].note
    [copy] = sent(db)
    headers = dict(decode_headers(copy.headers))
    assert (headers[REDRIVE_COUNT_HEADER], headers[REDRIVE_ORIGIN_HEADER]) == (
        b"3",
        b"orders:2:10",
    )
    assert headers[REDRIVE_HEADER] == f"redrive:{looping}".encode()
    # It fails again: its fourth dead letter carries the copy's headers.
    again = dead_letter(db, 2, 120, produced_s=0, extra=[(k, v or b"") for k, v in headers.items()])
    for dry_run in (True, False):
        with pytest.raises(RedriveLimit) as refused:
            deadletters.redrive(
                db,
                ids=[again],
                requested_by="alice",
                max_redrives=3,
                limit_setting="PAYMENT_REDRIVE_MAX",
                dry_run=dry_run,
            )
        message = str(refused.value)
        assert f"dead letter {again}: its record was redriven 3 time(s) already" in message
        assert f"`paysaga dlq show {again}`" in message and "raise PAYMENT_REDRIVE_MAX" in message
    assert len(sent(db)) == 1, "nothing sent when refused"
    # Raised, it goes once more.
    assert deadletters.redrive(db, ids=[again], requested_by="alice", max_redrives=4).send
    # Redriving one dead letter again counts too (its copies were not consumed yet).
    fresh = dead_letter(db, 3, 1, produced_s=0)
    for _ in range(2):
        deadletters.redrive(db, ids=[fresh], requested_by="bob", max_redrives=2)
    with pytest.raises(RedriveLimit, match="redriven 2 time"):
        deadletters.redrive(db, ids=[fresh], requested_by="bob", max_redrives=2)


def test_all_leaves_looping_records_out_and_sends_the_others(db: Database) -> None:
    good = dead_letter(db, 0, 5, produced_s=0)
    looping = dead_letter(db, 0, 9, produced_s=1, extra=[(REDRIVE_COUNT_HEADER, b"3")])
    garbage_count = dead_letter(db, 1, 3, produced_s=2, extra=[(REDRIVE_COUNT_HEADER, b"\xff")])
    plan = deadletters.redrive(db, topic="orders", requested_by="alice", max_redrives=3)
    assert [d.id for d in plan.send] == [good, garbage_count]
    assert plan.send[0].note == "not redriven yet; redrive 1 of its record (at most 3)"
    [left] = plan.left_out
    assert left.id == looping and "redriven 3 time(s) already" in left.note
    assert len(sent(db)) == 2


def test_dead_letters_go_back_oldest_first_per_partition_in_offset_order(db: Database) -> None:
    # Partition 0: an OrderPurchased (offset 3) and its OrderFailed (offset 4); the
    # purchase was redriven once and failed again, so its dead letter now sits at offset
    # 40, produced earlier than everything else.
    failed = dead_letter(db, 0, 4, produced_s=10, event_type="paysaga.v1.OrderFailed")
    purchase_again = dead_letter(
        db,
        0,
        40,
        produced_s=5,
        extra=[(REDRIVE_COUNT_HEADER, b"1"), (REDRIVE_ORIGIN_HEADER, b"orders:0:3")],
    )
    # Partition 1: two records, the later offset with an earlier clock (another producer).
    late_offset = dead_letter(db, 1, 8, produced_s=1)
    early_offset = dead_letter(db, 1, 7, produced_s=20)
    # Partition 2: a record with no usable time: when it was dead-lettered (now) counts.
    no_time = dead_letter(db, 2, 1, produced_s=0, extra=[("ce_time", b"yesterday")])
    for dry_run in (True, False):
        plan = deadletters.redrive(db, topic="orders", requested_by="alice", dry_run=dry_run)
        assert [d.id for d in plan.send] == [
            purchase_again,  # partition 0's first record by its original offset, time 5
            failed,  # then partition 0 goes on (10), before partition 1's head (20)
            early_offset,  # partition 1 in offset order, whatever the clocks say
            late_offset,
            no_time,
        ]
    assert [row.value for row in sent(db)] == [b"payload"] * 5
    order = [dict(decode_headers(row.headers))[REDRIVE_HEADER] for row in sent(db)]
    assert order == [f"redrive:{i}".encode() for i in [purchase_again, failed, early_offset,
                                                        late_offset, no_time]]  # fmt: skip
