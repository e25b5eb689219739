"""Redrive safety through the `paysaga` command (real Kafka, SQLite and PostgreSQL): a dry run
shows what would be sent and sends nothing; a record that keeps failing is refused once it
was redriven as often as allowed (here 2), and `--all` leaves it out; `--all` sends records
back in their original order, so they reach the consumer in that order again."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import grpc
import pytest
from sqlalchemy import select
from sqlmodel import col

from paysaga.admin.v1 import admin_pb2
from services.cli import run
from services.common.messaging.journal import DeadLetter, SagaStep, StepKind
from tests.integration.admin_support import Admin, poison_transaction, serve_admin
from tests.integration.conftest import Saga
from tests.support import wait_for

pytestmark = pytest.mark.integration

REDRIVE_MAX = 2


@pytest.fixture(scope="module")
def admin(saga: Saga) -> Iterator[Admin]:
    with serve_admin(saga, redrive_max=REDRIVE_MAX) as served:
        yield served


def letters_of(admin: Admin, capsys: pytest.CaptureFixture[str], order_id: str) -> list[Any]:
    """The order's dead letters on `transactions`, oldest first."""
    found = admin.cli(capsys, "dlq", "list", "--topic", "transactions")
    return sorted((d for d in found if d["order_id"] == order_id), key=lambda d: d["id"])


def dead_lettered(admin: Admin, capsys: pytest.CaptureFixture[str], order_id: str) -> Any:
    """The order's newest dead letter, once there is one never redriven."""
    return wait_for(
        f"a dead letter of {order_id} not redriven yet",
        lambda: next(
            (d for d in letters_of(admin, capsys, order_id) if not d.get("redrive_count")),
            None,
        ),
    )


def redriven_steps(saga: Saga, order_id: str) -> int:
    with saga.order_db.read() as session:
        steps = session.execute(
            select(SagaStep)
            .where(col(SagaStep.order_id) == order_id)
            .where(col(SagaStep.kind) == StepKind.REDRIVEN.value)
        ).scalars()
        return len(list(steps))


def test_a_dry_run_shows_what_would_be_sent_and_sends_nothing(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    saga = admin.saga
    order_id, user = str(uuid.uuid4()), saga.new_user(0)
    event_id = poison_transaction(saga, order_id, user)
    letter = dead_lettered(admin, capsys, order_id)
    [would] = admin.cli(capsys, "dlq", "redrive", letter["id"], "--dry-run")
    assert (would["id"], would["topic"]) == (letter["id"], "transactions")
    assert (would["partition"], int(would["offset"])) == (
        letter["partition"],
        int(letter["offset"]),
    )
    assert (would["event_id"], would["event_type"]) == (event_id, "paysaga.v1.TransactionRecorded")
    assert would["order_id"] == order_id and f"unknown order '{order_id}'" in would["reason"]
    assert base64.b64decode(would["key"]) == str(user).encode()  # bytes: base64 in JSON
    assert would["note"] == f"named; redrive 1 of its record (at most {REDRIVE_MAX})"
    capsys.readouterr()
    assert run([*admin.flags, "dlq", "redrive", letter["id"], "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("dry run, nothing sent: 1 would be redriven, in this order")
    assert letter["id"] in out and str(user) in out and "named; redrive 1" in out
    wait_for("the order service to be caught up", admin.caught_up)
    assert [d["redrive_count"] for d in letters_of(admin, capsys, order_id)] == [0]
    assert redriven_steps(saga, order_id) == 0, "nothing recorded"


def test_a_record_that_keeps_failing_is_refused_past_the_limit(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    saga = admin.saga
    order_id, user = str(uuid.uuid4()), saga.new_user(0)
    poison_transaction(saga, order_id, user)
    letter = dead_lettered(admin, capsys, order_id)
    for redrive in range(1, REDRIVE_MAX + 1):
        [done] = admin.cli(capsys, "dlq", "redrive", letter["id"], "--by", "alice")
        assert done["record_redrive_count"] == redrive
        # Still poison: its copy is dead-lettered again, under new coordinates.
        wait_for(
            "the redriven copy to be dead-lettered again",
            lambda n=redrive: len(letters_of(admin, capsys, order_id)) == n + 1,
        )
        letter = dead_lettered(admin, capsys, order_id)
    with saga.order_db.read() as session:
        last = session.get(DeadLetter, letter["id"])
    assert last is not None and last.redrive_count == 0
    with pytest.raises(grpc.RpcError) as refused:
        admin.order.RedriveDeadLetters(
            admin_pb2.RedriveDeadLettersRequest(ids=[letter["id"]], requested_by="alice")
        )
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    message = refused.value.details() or ""
    assert f"its record was redriven {REDRIVE_MAX} time(s) already" in message
    assert "ORDER_REDRIVE_MAX" in message and f"paysaga dlq show {letter['id']}" in message
    capsys.readouterr()
    assert run([*admin.flags, "dlq", "redrive", letter["id"], "--dry-run"]) == 1
    assert "ORDER_REDRIVE_MAX" in capsys.readouterr().err, "a dry run is refused alike"
    # --all leaves it out, says so on stderr, and sends it nowhere.
    capsys.readouterr()
    code = run([*admin.flags, "dlq", "redrive", "--all", "--topic", "transactions", "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and f"left out {letter['id']}" in err
    assert letter["id"] not in out
    assert redriven_steps(saga, order_id) == REDRIVE_MAX


def test_all_sends_records_back_in_their_original_order(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    saga = admin.saga
    user = saga.new_user(0)  # one key: one partition, in this order
    orders = [str(uuid.uuid4()) for _ in range(3)]
    for order_id in orders:
        poison_transaction(saga, order_id, user)
    firsts = [dead_lettered(admin, capsys, order_id) for order_id in orders]
    assert len({d["partition"] for d in firsts}) == 1
    assert [int(d["offset"]) for d in firsts] == sorted(int(d["offset"]) for d in firsts)
    planned = admin.cli(capsys, "dlq", "redrive", "--all", "--topic", "transactions", "--dry-run")
    mine = [d["id"] for d in planned if d["order_id"] in orders]
    assert mine == [d["id"] for d in firsts], "oldest first"
    sent = admin.cli(capsys, "dlq", "redrive", "--all", "--topic", "transactions", "--by", "bob")
    assert [d["id"] for d in sent if d["order_id"] in orders] == mine
    # The copies are consumed (and dead-lettered again) in the same order.
    again = [
        wait_for(
            "each copy to be dead-lettered again",
            lambda o=order_id: next(
                (d for d in letters_of(admin, capsys, o) if not d.get("redrive_count")), None
            ),
        )
        for order_id in orders
    ]
    assert len({d["partition"] for d in again}) == 1
    offsets = [int(d["offset"]) for d in again]
    assert offsets == sorted(offsets) and offsets[0] > int(firsts[-1]["offset"])
