"""The admin API's messages of dead letters and redrives (paysaga.admin.v1), made from
the rows and plans of services.common.operations.deadletters."""

from __future__ import annotations

from datetime import UTC, datetime

from paysaga.admin.v1 import admin_pb2
from services.common.messaging.journal import DeadLetter
from services.common.messaging.topics import TopicTable
from services.common.operations import deadletters
from services.common.serving.grpc_errors import echo
from services.common.timeutil import to_timestamp


def aware(moment: datetime) -> datetime:
    """`moment` with UTC as its zone if the database gave it none."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def decode_payload(
    topic_table: TopicTable, topic: str, ce_type: str, value: bytes | None
) -> tuple[str, str]:
    """(the payload in protobuf text format, "") if it decodes with the contract, else
    ("", why not)."""
    known = topic_table.consumed.get(topic)
    event_type = known.event_type_named(ce_type) if known else None
    if event_type is None:
        return "", f"no event type {echo(ce_type)} on topic {echo(topic)}"
    if not value:
        return "", "empty payload"
    try:
        return str(event_type.FromString(value)), ""
    except Exception as exc:
        return "", f"not a valid {ce_type}: {exc}"


def letter_message(letter: DeadLetter, service: str) -> admin_pb2.DeadLetter:
    """A dead letter as the admin API lists it (`service`: the one that holds it)."""
    message = admin_pb2.DeadLetter(
        id=letter.id,
        topic=letter.topic,
        partition=letter.kafka_partition,
        offset=letter.kafka_offset,
        event_id=letter.event_id,
        event_type=letter.event_type,
        order_id=letter.order_id,
        reason=letter.reason,
        dead_letter_time=to_timestamp(aware(letter.dead_lettered_at)),
        redrive_count=letter.redrive_count,
        redriven_by=letter.redriven_by,
        service=service,
    )
    if letter.redriven_at is not None:
        message.redrive_time.CopyFrom(to_timestamp(letter.redriven_at))
    return message


def redriven_message(item: deadletters.Redriven) -> admin_pb2.Redriven:
    """One dead letter of a redrive plan (sent, or left out and why)."""
    message = admin_pb2.Redriven(
        id=item.id,
        redrive_id=item.redrive_id,
        redrive_count=item.redrive_count,
        topic=item.topic,
        partition=item.partition,
        offset=item.offset,
        event_id=item.event_id,
        event_type=item.event_type,
        reason=item.reason,
        order_id=item.order_id,
        note=item.note,
        record_redrive_count=item.record_redrive_count,
    )
    if item.key is not None:
        message.key = item.key
    return message
