"""The admin API and the `paysaga` command over the running saga (real Kafka, SQLite and
PostgreSQL): timelines of a completed, a failed and a refunded order, a real poison record
dead-lettered, fixed and redriven twice (applied once), status, and the inbox purge."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import grpc
import pytest
from sqlalchemy import select
from sqlmodel import col

from paysaga.admin.v1 import admin_pb2
from paysaga.v1 import orders_pb2
from services.cli import run
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import SagaStep, StepKind
from services.common.messaging.outbox import OutboxWriter
from services.common.operations.retention import InboxPurge
from services.common.timeutil import utcnow
from services.order.domain import Status, deadline_reason
from services.order.handlers import write_order_changes
from services.order.models import ORDERS_TABLE, Order
from services.payment.models import Payment
from services.saga.topics import SAGA_TOPICS
from tests.integration.admin_support import Admin, poison_transaction, serve_admin
from tests.integration.conftest import Saga
from tests.support import wait_for, wait_terminal

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def admin(saga: Saga) -> Iterator[Admin]:
    with serve_admin(saga) as served:
        yield served


def _kinds(timeline: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(service, kind, topic, event type) of each step."""
    return [
        (s["service"], s["kind"], s.get("topic", ""), s.get("event_type", "").split(".")[-1])
        for s in timeline["steps"]
    ]


def _order_steps(saga: Saga, order_id: str, kind: StepKind) -> list[SagaStep]:
    with saga.order_db.read() as session:
        query = select(SagaStep).where(col(SagaStep.order_id) == order_id)
        return [s for s in session.execute(query).scalars() if s.kind == kind.value]


def test_timeline_of_a_completed_order(admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    user = admin.saga.new_user(10000)
    order = admin.saga.completed(user, 1)
    assert order.status == orders_pb2.ORDER_STATUS_COMPLETED
    timeline = admin.cli(capsys, "order", "timeline", order.id)
    assert timeline["status"] == "COMPLETED"
    kinds = _kinds(timeline)
    assert kinds[0] == ("order", "STEP_KIND_ORDER_CREATED", "", "")
    for step in [
        ("order", "STEP_KIND_PRODUCED", "orders", "OrderPurchased"),
        ("payment", "STEP_KIND_APPLIED", "orders", "OrderPurchased"),
        ("payment", "STEP_KIND_APPLIED", "payments", "PaymentProcessed"),
        ("payment", "STEP_KIND_PRODUCED", "transactions", "TransactionRecorded"),
        ("order", "STEP_KIND_APPLIED", "transactions", "TransactionRecorded"),
    ]:
        assert step in kinds, f"{step} missing from {kinds}"
    assert kinds.index(("payment", "STEP_KIND_APPLIED", "orders", "OrderPurchased")) < kinds.index(
        ("order", "STEP_KIND_APPLIED", "transactions", "TransactionRecorded")
    )
    applied = [s for s in timeline["steps"] if s["kind"] == "STEP_KIND_APPLIED"]
    for step in applied:
        assert step["partition"] >= 0 and int(step["offset"]) >= 0 and step["produced_time"]
        assert step["replica"]
    produced = {s["event_id"] for s in timeline["steps"] if s["kind"] == "STEP_KIND_PRODUCED"}
    assert {s["event_id"] for s in applied} <= produced, "every applied event was produced"
    times = [s["time"] for s in timeline["steps"]]
    assert times == sorted(times)


def test_timeline_of_a_failed_order(admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    user = admin.saga.new_user(100)
    order = admin.saga.completed(user, 1)
    assert order.status == orders_pb2.ORDER_STATUS_FAILED
    # The Payment service applies the order's OrderFailed after the order ended.
    wait_for(
        "OrderFailed to be applied",
        lambda: (
            ("payment", "STEP_KIND_APPLIED", "orders", "OrderFailed")
            in _kinds(admin.cli(capsys, "order", "timeline", order.id))
        ),
    )
    timeline = admin.cli(capsys, "order", "timeline", order.id)
    assert timeline["status"] == "FAILED" and "insufficient balance" in timeline["failure_reason"]
    declined = [s for s in timeline["steps"] if s.get("event_type", "").endswith("Processed")]
    assert declined and all(s["detail"].startswith("DECLINED") for s in declined)
    assert ("order", "STEP_KIND_PRODUCED", "orders", "OrderFailed") in _kinds(timeline)


def test_timeline_of_a_refunded_order(admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    """The order's deadline passes after its charge, before its outcome is applied: it
    FAILS, and the money is given back."""
    saga = admin.saga
    user = saga.new_user(10000)
    order = saga.order(user, 1)
    with saga.order_db.write() as session:
        # Holding the order's row (and, on SQLite, the write lock) keeps the outcome out
        # while the Payment service charges; then fail it as its deadline would.
        row = dict(
            session.execute(
                select(ORDERS_TABLE).where(ORDERS_TABLE.c.id == order.id).with_for_update()
            )
            .mappings()
            .one()
        )
        assert row["status"] == Status.CREATED.value

        def charged() -> bool:
            with saga.payment_db.read() as payments:
                payment = payments.get(Payment, order.id)
            return payment is not None and payment.approved

        wait_for("the payment to be charged", charged, timeout_s=20)
        row.update(status=Status.FAILED.value, failure_reason=deadline_reason(60))
        row.update(updated_at=utcnow(), version=row.get("version", 1) + 1)
        outbox = OutboxWriter(SAGA_TOPICS)
        write_order_changes(session, outbox, [row], {order.id})
        outbox.write(session)
    wait_for(
        "the refund to be noted",
        lambda: "refunded" in wait_terminal(saga.orders, order.id).failure_reason,
    )
    timeline = admin.cli(capsys, "order", "timeline", order.id)
    refunds = [s for s in timeline["steps"] if "REFUND" in s.get("detail", "")]
    assert [(s["service"], s["kind"]) for s in refunds] == [
        ("payment", "STEP_KIND_PRODUCED"),
        ("order", "STEP_KIND_APPLIED"),
    ]
    assert timeline["status"] == "FAILED" and "refunded" in timeline["failure_reason"]


def test_dead_letter_round_trip_applies_once(
    admin: Admin, capsys: pytest.CaptureFixture[str]
) -> None:
    saga = admin.saga
    order_id, user = str(uuid.uuid4()), saga.new_user(0)
    event_id = poison_transaction(saga, order_id, user)

    def listed() -> dict[str, Any] | None:
        found = admin.cli(capsys, "dlq", "list", "--topic", "transactions")
        return next((d for d in found if d["event_id"] == event_id), None)

    letter = wait_for("the poison record to be dead-lettered", listed)
    assert letter["order_id"] == order_id and letter["service"] == "order"
    assert f"unknown order '{order_id}'" in letter["reason"]
    shown = admin.cli(capsys, "dlq", "show", letter["id"])
    assert f'order_id: "{order_id}"' in shown["decoded"]
    assert {h["name"] for h in shown["headers"]} >= {"ce_id", "ce_type", "ce_subject"}
    since = admin.cli(capsys, "dlq", "list", "--since", "10m")
    assert letter["id"] in {d["id"] for d in since}

    # The fix: the order it was about exists now.
    with saga.order_db.write() as session:
        session.add(
            Order(
                id=order_id, user_id=user, product_id=1, price_cents=5000,
                status=Status.CREATED.value, request_id=str(uuid.uuid4()),
            )
        )  # fmt: skip
    first = admin.cli(capsys, "dlq", "redrive", letter["id"], "--by", "alice")
    assert first[0]["redrive_count"] == 1
    assert first[0]["redrive_id"] == f"redrive:{letter['id']}"
    # Again at once: sent again with the same redrive id (dropped by the inbox), or refused
    # if the first copy was consumed in between. Either way it applies once.
    redrive_again = admin_pb2.RedriveDeadLettersRequest(ids=[letter["id"]], requested_by="bob")
    try:
        admin.order.RedriveDeadLetters(redrive_again)
        redrives = 2
    except grpc.RpcError as refused:
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        redrives = 1

    wait_for(
        "the redriven event to complete the order",
        lambda: wait_terminal(saga.orders, order_id).status == orders_pb2.ORDER_STATUS_COMPLETED,
    )
    wait_for("the copies to be consumed", admin.caught_up)
    applied = _order_steps(saga, order_id, StepKind.APPLIED)
    assert [(s.event_id, s.topic) for s in applied] == [(event_id, "transactions")]
    completions = [
        s for s in _order_steps(saga, order_id, StepKind.PRODUCED) if s.detail == "COMPLETED"
    ]
    assert len(completions) == 1, "applied exactly once"
    assert len(_order_steps(saga, order_id, StepKind.REDRIVEN)) == redrives
    with saga.order_db.read() as session:
        assert session.get(ProcessedEvent, f"redrive:{letter['id']}") is not None
    # Once its copy was consumed, a redrive is refused with what to do instead.
    with pytest.raises(grpc.RpcError) as refused:
        admin.order.RedriveDeadLetters(redrive_again)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "consumed already" in (refused.value.details() or "")
    after = admin.cli(capsys, "dlq", "list", "--topic", "transactions")
    mine = [d for d in after if d["order_id"] == order_id]
    assert [(d["id"], d["redrive_count"]) for d in mine] == [(letter["id"], redrives)]


def test_status_of_each_service(admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    replicas = admin.cli(capsys, "status")
    by_service = {r["service"]: r for r in replicas}
    assert set(by_service) == {"order", "payment"}
    for replica in replicas:
        assert "error" not in replica and not replica["lag_error"] and not replica["problems"]
        # (The health service is on the app's port; this admin server stands beside it.)
        assert {"", "paysaga.outbox"} <= set(replica["health_names"])
        assert float(replica["inbox_retention_days"]) == 14
    payment_topics = {p["topic"] for p in by_service["payment"]["lag"]}
    assert payment_topics == {"orders", "payments"}
    assert {p["topic"] for p in by_service["order"]["lag"]} == {"transactions"}
    assert any(p.get("assigned_here") for p in by_service["order"]["lag"])


def test_errors_say_what_to_fix(admin: Admin, capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*admin.flags, "order", "timeline", str(uuid.uuid4())]) == 1
    assert "neither service recorded anything" in capsys.readouterr().err
    assert run([*admin.flags, "dlq", "show", "payments:0:999999"]) == 1
    assert "no dead letter 'payments:0:999999'" in capsys.readouterr().err
    with pytest.raises(grpc.RpcError) as failed:
        admin.payment.ListStuckOrders(admin_pb2.ListStuckOrdersRequest())
    assert failed.value.code() == grpc.StatusCode.UNIMPLEMENTED
    with pytest.raises(grpc.RpcError) as failed:
        admin.order.RedriveDeadLetters(admin_pb2.RedriveDeadLettersRequest(ids=["x"]))
    assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "requested_by" in (failed.value.details() or "")


def test_inbox_purge_deletes_old_rows_in_small_batches(admin: Admin) -> None:
    db = admin.saga.order_db
    now = utcnow()
    old = [f"old-{uuid.uuid4()}" for _ in range(5)]
    recent = f"recent-{uuid.uuid4()}"
    with db.write() as session:
        for event_id in old:
            session.add(ProcessedEvent(event_id=event_id, topic="transactions",
                                       processed_at=now - timedelta(days=15)))  # fmt: skip
        session.add(ProcessedEvent(event_id=recent, topic="transactions",
                                   processed_at=now - timedelta(days=13)))  # fmt: skip
    purge = InboxPurge(db, retention_days=14, batch_size=2)
    while purge():
        pass
    assert purge.purged >= 5
    with db.read() as session:
        left = {
            e.event_id
            for e in session.execute(
                select(ProcessedEvent).where(col(ProcessedEvent.event_id).in_([*old, recent]))
            ).scalars()
        }
    assert left == {recent}
