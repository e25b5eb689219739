"""paysaga.admin.v1.AdminService, the part both services share (see admin.proto).

Served on the service's own gRPC port (one address per replica to reach and secure). Its
methods are plain synchronous functions: the gRPC server runs them in its thread pool.
Every answer comes from this service's database (the saga journal, dead letters, outbox,
inbox), except the consumer group's lag, asked of Kafka with a short timeout so a broker
outage shows as `lag_error` instead of a hung call. Each service subclasses it for what
only it knows (the Order service: orders and stuck sagas).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from datetime import UTC
from typing import Any

import grpc
from sqlalchemy import func, select
from sqlmodel import Session, col

from paysaga.admin.v1 import admin_pb2, admin_pb2_grpc
from services.common.headers import header_dict
from services.common.messaging.consumer import EventConsumer
from services.common.messaging.inbox import ProcessedEvent
from services.common.messaging.journal import SagaStep, StepKind
from services.common.messaging.outbox import decode_headers
from services.common.messaging.relay import OutboxRelay
from services.common.messaging.topics import TopicTable
from services.common.operations import deadletters
from services.common.operations.backlog import GroupLag, Progress, outbox_backlog, stall_problems
from services.common.operations.letter_messages import (
    decode_payload,
    letter_message,
    redriven_message,
)
from services.common.operations.retention import purge_worker
from services.common.persistence.db import Database
from services.common.security.identity import LOCAL_CALLER, current_caller
from services.common.serving.grpc_errors import abort, echo
from services.common.serving.paging import BadPageRequest, Cursor, keyset_page
from services.common.timeutil import to_timestamp, utcnow
from services.common.worker import PeriodicWorker

log = logging.getLogger(__name__)

SERVICE_NAME = admin_pb2.DESCRIPTOR.services_by_name["AdminService"].full_name

_STEP_KINDS = {
    StepKind.PRODUCED.value: admin_pb2.STEP_KIND_PRODUCED,
    StepKind.APPLIED.value: admin_pb2.STEP_KIND_APPLIED,
    StepKind.DEAD_LETTERED.value: admin_pb2.STEP_KIND_DEAD_LETTERED,
    StepKind.REDRIVEN.value: admin_pb2.STEP_KIND_REDRIVEN,
}
_DEFAULT_LIMIT = 100
_MAX_LIMIT = 1000
_MAX_ID_CHARS = 200


def _limit(requested: int) -> int:
    return min(requested, _MAX_LIMIT) if requested > 0 else _DEFAULT_LIMIT


def held_scope(older_than_s: float, order_ids: Iterable[str]) -> str:
    """A ListHeldOrders page token's scope: its filters (the order ids as a digest)."""
    ids = ",".join(sorted(set(order_ids)))
    return f"held:{older_than_s:g}:{hashlib.sha256(ids.encode()).hexdigest()[:16]}"


def page_after(context: grpc.ServicerContext, token: str, scope: str) -> Cursor | None:
    """The cursor an admin list's page_token carries (None: the first page); a token of
    another listing ends the call with INVALID_ARGUMENT."""
    try:
        return Cursor.decode(token, scope) if token else None
    except BadPageRequest as exc:
        abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc), "INVALID_PAGE_REQUEST")


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    """The admin API of one service replica (`service` is "order" or "payment").

    `attach(workers, health_names)` hands it the running consumer and relay (for the last
    batch applied and the relay's place) and the health names the replica reports.
    """

    def __init__(
        self,
        *,
        service: str,
        db: Database,
        bootstrap_servers: str,
        consumer_group: str,
        topics: Sequence[str],
        topic_table: TopicTable,
        inbox_retention_days: float,
        journal_retention_days: float = 90.0,
        redrive_max: int = 3,
        stalled_after_s: float = 30.0,
        kafka_timeout_s: float = 3.0,
    ) -> None:
        self.service = service
        self.db = db
        self.consumer_group = consumer_group
        self.topics = list(topics)
        self.topic_table = topic_table
        self.inbox_retention_days = inbox_retention_days
        self.journal_retention_days = journal_retention_days
        self.redrive_max = redrive_max
        self.stalled_after_s = stalled_after_s
        self.kafka_timeout_s = kafka_timeout_s
        self.group_lag = GroupLag(bootstrap_servers, consumer_group, f"paysaga-{service}-status")
        self.started_at = utcnow()
        self.consumer: EventConsumer | None = None
        self.relay: OutboxRelay | None = None
        self.workers: list[Any] = []
        self.health_names: list[str] = []

    def register(self, server: grpc.Server | grpc.aio.Server) -> None:
        """Serve the admin API on `server` (add SERVICE_NAME to its reflection list too)."""
        admin_pb2_grpc.add_AdminServiceServicer_to_server(self, server)

    def retention_worker(self) -> PeriodicWorker:
        """The worker that purges this service's inbox and journal (operations.retention)."""
        return purge_worker(
            self.db,
            inbox_retention_days=self.inbox_retention_days,
            journal_retention_days=self.journal_retention_days,
        )

    def attach_app(self, app: Any) -> None:
        """`attach` to a built GrpcApp: its workers and health names ("", its services'
        names, its status checks' names)."""
        names = ["", *getattr(app, "service_names", [])]
        names += [n for n in getattr(app, "status_checks", {}) if n not in names]
        self.attach(getattr(app, "workers", []), names)

    def attach(self, workers: Iterable[Any], health_names: Iterable[str] = ()) -> None:
        self.workers = list(workers)
        for worker in self.workers:
            if isinstance(worker, EventConsumer):
                self.consumer = worker
            elif isinstance(worker, OutboxRelay):
                self.relay = worker
        self.health_names = list(health_names)

    # -- status ----------------------------------------------------------------------

    def GetStatus(
        self, request: admin_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetStatusResponse:
        return self.status()

    def status(self) -> admin_pb2.GetStatusResponse:
        """This replica's status (see GetStatus)."""
        relay = self.relay
        through = relay.published_through if relay is not None else 0
        with self.db.read() as session:
            backlog = outbox_backlog(session, through)
            dead = deadletters.count_by_topic(session)
            inbox_rows = session.execute(
                select(func.count()).select_from(ProcessedEvent)
            ).scalar_one()
        response = admin_pb2.GetStatusResponse(
            service=self.service,
            replica=self.db.instance,
            outbox_pending=backlog.pending,
            outbox_oldest_age_seconds=backlog.oldest_age_s,
            outbox_parked=backlog.parked,
            consumer_group=self.consumer_group,
            dead_letters=[admin_pb2.TopicCount(topic=t, count=n) for t, n in sorted(dead.items())],
            health_names=self.health_names,
            inbox_rows=inbox_rows,
            inbox_retention_days=self.inbox_retention_days,
        )
        consumer = self.consumer
        if consumer is not None:
            response.records_applied = consumer.applied
            if consumer.last_batch_at is not None:
                response.last_batch_time.CopyFrom(to_timestamp(consumer.last_batch_at))
        mine = self._assigned()
        waiting_here: int | None = None
        try:
            lags = self.group_lag.lag(self.topics, self.kafka_timeout_s)
        except Exception as exc:
            response.lag_error = f"Kafka did not answer: {exc}"
            response.problems.append(f"consumer lag unknown: {response.lag_error}")
        else:
            waiting_here = 0
            for lag in lags:
                here = (lag.topic, lag.partition) in mine
                waiting_here += lag.behind if here else 0
                response.lag.append(
                    admin_pb2.PartitionLag(
                        topic=lag.topic,
                        partition=lag.partition,
                        committed=lag.committed,
                        end=lag.end,
                        lag=lag.behind,
                        assigned_here=here,
                    )
                )
        progress = Progress(
            started_at=self.started_at,
            last_batch_at=consumer.last_batch_at if consumer else None,
            waiting_here=waiting_here,
            outbox=backlog,
            dead_workers=[type(w).__name__ for w in self.workers if not w.is_alive()],
        )
        response.problems.extend(
            stall_problems(progress, stalled_after_s=self.stalled_after_s, now=utcnow())
        )
        return response

    def _assigned(self) -> set[tuple[str, int]]:
        """The partitions this replica's consumer holds now (empty if unknown)."""
        return set(self.consumer.assigned) if self.consumer is not None else set()

    # -- timeline --------------------------------------------------------------------

    def GetOrderTimeline(
        self, request: admin_pb2.GetOrderTimelineRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetOrderTimelineResponse:
        order_id = request.order_id.strip()
        if not order_id or len(order_id) > _MAX_ID_CHARS:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "order_id is required (an order's id)",
                "ORDER_ID_REQUIRED",
            )
        with self.db.read() as session:
            rows = session.execute(
                select(SagaStep)
                .where(col(SagaStep.order_id) == order_id)
                .order_by(col(SagaStep.recorded_at), col(SagaStep.id))
            ).scalars()
            response = admin_pb2.GetOrderTimelineResponse(steps=[self._step(row) for row in rows])
            self.describe_order(session, order_id, response)
        if not response.steps:
            abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"the {self.service} service recorded nothing for order {echo(order_id)}",
                "ORDER_NOT_FOUND",
            )
        return response

    def describe_order(
        self, session: Session, order_id: str, response: admin_pb2.GetOrderTimelineResponse
    ) -> None:
        """Add what this service knows of the order beyond its steps (nothing by default)."""

    def _step(self, row: SagaStep) -> admin_pb2.Step:
        step = admin_pb2.Step(
            time=to_timestamp(row.recorded_at),
            kind=_STEP_KINDS.get(row.kind, admin_pb2.STEP_KIND_UNSPECIFIED),
            service=self.service,
            replica=row.replica,
            topic=row.topic,
            partition=row.kafka_partition if row.kafka_partition is not None else -1,
            offset=row.kafka_offset if row.kafka_offset is not None else -1,
            event_id=row.event_id,
            event_type=row.event_type,
            detail=row.detail,
        )
        if row.produced_at is not None:
            step.produced_time.CopyFrom(to_timestamp(row.produced_at))
        return step

    # -- stuck orders ----------------------------------------------------------------

    def ListStuckOrders(
        self, request: admin_pb2.ListStuckOrdersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListStuckOrdersResponse:
        abort(
            context,
            grpc.StatusCode.UNIMPLEMENTED,
            f"the {self.service} service holds no orders: ask the Order service",
            "NOT_THIS_SERVICE",
        )

    # -- dead letters ----------------------------------------------------------------

    def _check_topic(self, context: grpc.ServicerContext, topic: str) -> None:
        known = self.topic_table.consumed
        if topic and topic not in known:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                f"no saga topic {echo(topic)}: use one of {', '.join(sorted(known))}",
                "UNKNOWN_TOPIC",
            )

    def ListDeadLetters(
        self, request: admin_pb2.ListDeadLettersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.ListDeadLettersResponse:
        self._check_topic(context, request.topic)
        since = request.since.ToDatetime(UTC) if request.HasField("since") else None
        scope = f"dead-letters:{request.topic}:{since.isoformat() if since else ''}"
        after = page_after(context, request.page_token, scope)
        limit = _limit(request.limit)
        found = deadletters.list_dead_letters(
            self.db, topic=request.topic, since=since, limit=limit + 1, after=after
        )
        page, token = keyset_page(found, limit, scope, lambda d: (d.dead_lettered_at, d.id))
        return admin_pb2.ListDeadLettersResponse(
            dead_letters=[letter_message(d, self.service) for d in page], next_page_token=token
        )

    def GetDeadLetter(
        self, request: admin_pb2.GetDeadLetterRequest, context: grpc.ServicerContext
    ) -> admin_pb2.GetDeadLetterResponse:
        try:
            letter = deadletters.get_dead_letter(self.db, request.id)
        except deadletters.NoSuchDeadLetter as exc:
            abort(
                context,
                grpc.StatusCode.NOT_FOUND,
                f"{exc} (ids look like payments:3:17)",
                "DEAD_LETTER_NOT_FOUND",
            )
        headers = decode_headers(letter.headers)
        response = admin_pb2.GetDeadLetterResponse(
            dead_letter=letter_message(letter, self.service),
            value=letter.value or b"",
            headers=[admin_pb2.Header(name=n, value=v or b"") for n, v in headers],
        )
        if letter.key is not None:
            response.key = letter.key
        response.decoded, response.decode_error = decode_payload(
            self.topic_table,
            letter.topic,
            header_dict(list(headers)).get("ce_type", ""),
            letter.value,
        )
        return response

    def RedriveDeadLetters(
        self, request: admin_pb2.RedriveDeadLettersRequest, context: grpc.ServicerContext
    ) -> admin_pb2.RedriveDeadLettersResponse:
        by = request.requested_by.strip()
        if not by:
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "requested_by is required: who asks",
                "REQUESTED_BY_REQUIRED",
            )
        caller = current_caller()
        if caller is not None and caller is not LOCAL_CALLER:
            by = f"{by} (token: {caller.describe()})"  # who asked, as the token proves it
        if request.all == bool(request.ids):
            abort(
                context,
                grpc.StatusCode.INVALID_ARGUMENT,
                "name the dead letters to redrive (ids), or set all with a topic: not both",
                "IDS_OR_ALL",
            )
        if request.all and not request.topic:
            abort(context, grpc.StatusCode.INVALID_ARGUMENT, "all needs a topic", "TOPIC_REQUIRED")
        self._check_topic(context, request.topic)
        try:
            plan = deadletters.redrive(
                self.db,
                ids=list(request.ids),
                topic=request.topic,
                requested_by=by[:200],
                max_redrives=self.redrive_max,
                limit_setting=f"{self.service.upper()}_REDRIVE_MAX",
                dry_run=request.dry_run,
            )
        except deadletters.NoSuchDeadLetter as exc:
            abort(context, grpc.StatusCode.NOT_FOUND, str(exc), "DEAD_LETTER_NOT_FOUND")
        except (deadletters.AlreadyConsumed, deadletters.RedriveLimit) as exc:
            limit = isinstance(exc, deadletters.RedriveLimit)
            abort(
                context,
                grpc.StatusCode.FAILED_PRECONDITION,
                str(exc),
                "REDRIVE_LIMIT" if limit else "ALREADY_CONSUMED",
            )
        if not request.dry_run:
            sent, left_out = [d.id for d in plan.send], [d.id for d in plan.left_out]
            log.warning(
                "dead letters redriven",
                extra={"ids": sent, "left_out": left_out, "requested_by": by},
            )
        return admin_pb2.RedriveDeadLettersResponse(
            redriven=[redriven_message(d) for d in plan.send],
            dry_run=request.dry_run,
            left_out=[redriven_message(d) for d in plan.left_out],
        )
