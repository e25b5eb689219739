"""What the console watches in the background, once for all its pages: the order changes
(one WatchOrders stream of every order, resumed on another replica when one goes away) and
every replica's status (asked every PAYSAGA_CONSOLE_STATUS_POLL_S). Both feed the flow's
window (services.console.flow); the changes are also kept, numbered, for the orders pages.

Two threads, because the client layer is synchronous gRPC; the pages read under a lock.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc

from paysaga.v1 import orders_pb2, orders_pb2_grpc
from services.cli.client import Client, explain
from services.console.flow import TOPICS, FlowWindow, TopicSample
from services.console.gateway import all_replicas

log = logging.getLogger(__name__)

#: The initial-metadata key of a WatchOrders stream's starting resume token (orders.proto).
RESUME_TOKEN_KEY = "paysaga-resume-token"
#: Order changes kept for the orders pages (a page more than this behind starts again).
RECENT_CHANGES = 5000
#: Orders whose last status is remembered, so that a later change of an ended order (a
#: refund note) is not counted as a second ending.
REMEMBERED_ORDERS = 100_000


@dataclass(frozen=True)
class Change:
    """One order change, numbered in the order the console saw it."""

    seq: int
    order: orders_pb2.Order


class Hub:
    """The background watchers; `start()` once, `stop()` at shutdown."""

    def __init__(self, client: Client, status_poll_s: float = 2.0) -> None:
        self.client = client
        self.status_poll_s = status_poll_s
        self.flow = FlowWindow()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._changes: deque[Change] = deque(maxlen=RECENT_CHANGES)
        self._seq = 0
        self._last_status: OrderedDict[str, int] = OrderedDict()
        self._call: Any = None
        self._threads: list[threading.Thread] = []
        self._pool = ThreadPoolExecutor(8, thread_name_prefix="console-status")
        self._summary: tuple[int, dict[str, Any]] | None = None
        #: Where WatchOrders is connected, or why it is not.
        self.watch_state = "connecting"
        self.watch_error = ""
        self.replicas: list[dict[str, Any]] = []
        self.replicas_at = 0.0

    # -- life ----------------------------------------------------------------------------

    def start(self) -> None:
        for target, name in ((self._watch, "console-watch"), (self._poll, "console-poll")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        call = self._call
        if call is not None:
            call.cancel()
        for thread in self._threads:
            thread.join(timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    # -- order changes -------------------------------------------------------------------

    def _watch(self) -> None:
        token = ""
        turn = 0
        while not self._stopping.is_set():
            addresses = self.client.targets.order
            address = addresses[turn % len(addresses)]
            turn += 1
            stub = orders_pb2_grpc.OrderServiceStub(self.client.channel(address))
            try:
                resumed = bool(token)
                call = stub.WatchOrders(orders_pb2.WatchOrdersRequest(resume_token=token))
                self._call = call
                # Subscribed: from here a resume misses nothing, even before any change.
                for key, value in call.initial_metadata() or ():
                    if key == RESUME_TOKEN_KEY:
                        token = value
                        self.watch_state, self.watch_error = address, ""
                for answer in call:
                    if self.watch_state != address:
                        self.watch_state, self.watch_error = address, ""
                    token = answer.resume_token or token
                    # On a resumed stream the initial state is orders in flight that changed
                    # while the console was away: counted as changes (a known status is not
                    # counted twice). On a new one it is what was there before the console.
                    if resumed or not answer.initial_state:
                        self.order_changed(answer.order, time.time())
            except grpc.RpcError as exc:
                if self._stopping.is_set():
                    return
                if exc.code() == grpc.StatusCode.OUT_OF_RANGE:  # type: ignore[attr-defined]
                    token = ""  # too far behind to resume: watch again from now
                error = explain(exc, "order", address)
                if error != self.watch_error:  # said once, not once a second while down
                    log.warning("WatchOrders ended: %s", error)
                self.watch_state, self.watch_error = "", error
            except ValueError as exc:  # e.g. a token refused in clear text off loopback
                self.watch_state, self.watch_error = "", str(exc)
            self._stopping.wait(1.0)

    def order_changed(self, order: orders_pb2.Order, now: float) -> None:
        """Count one change of an order (from WatchOrders) and keep it for the pages."""
        with self._lock:
            before = self._last_status.pop(order.id, None)
            self._last_status[order.id] = order.status
            if len(self._last_status) > REMEMBERED_ORDERS:
                self._last_status.popitem(last=False)
            if order.status != before:
                if order.status == orders_pb2.ORDER_STATUS_CREATED:
                    self.flow.order_created(now)
                elif order.status == orders_pb2.ORDER_STATUS_COMPLETED:
                    self.flow.order_completed(now)
                elif order.status == orders_pb2.ORDER_STATUS_FAILED:
                    self.flow.order_failed(order.id, order.failure_reason, now)
            self._seq += 1
            self._changes.append(Change(self._seq, order))

    def changes_since(self, seq: int) -> tuple[int, list[orders_pb2.Order]]:
        """The changes after number `seq` (the last of each order only), and the last number."""
        with self._lock:
            latest = self._seq
            if seq >= latest:
                return latest, []
            newer = [c.order for c in self._changes if c.seq > seq]
        last_of: dict[str, orders_pb2.Order] = {}
        for order in newer:
            last_of.pop(order.id, None)
            last_of[order.id] = order
        return latest, list(last_of.values())

    @property
    def last_seq(self) -> int:
        with self._lock:
            return self._seq

    # -- replicas ------------------------------------------------------------------------

    def _poll(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                self.replicas_seen(all_replicas(self.client, self._pool), time.time())
            except RuntimeError:  # the pool shut down: the console stops
                return
            self._stopping.wait(max(0.1, self.status_poll_s - (time.monotonic() - started)))

    def replicas_seen(self, replicas: list[dict[str, Any]], now: float) -> None:
        """A look at every replica: kept for /replicas, and the topics' offsets for the flow."""
        samples: dict[str, TopicSample] = {}
        dead: dict[str, int] = {}
        for replica in replicas:
            if "error" in replica or replica.get("lag_error"):
                continue
            for topic in TOPICS:
                parts = [p for p in replica.get("lag", []) if p.get("topic") == topic]
                if parts and topic not in samples:
                    samples[topic] = TopicSample(
                        end=sum(int(p.get("end", 0)) for p in parts),
                        committed=sum(max(0, int(p.get("committed", 0))) for p in parts),
                    )
            for count in replica.get("dead_letters", []):
                dead.setdefault(count["topic"], int(count.get("count", 0)))
        with self._lock:
            self.replicas, self.replicas_at = replicas, now
            self.flow.topics_seen(samples, dead, now)

    def flow_summary(self, now: float) -> dict[str, Any]:
        """The flow's summary, computed at most once a second for every page that asks."""
        second = int(now)
        with self._lock:
            if self._summary is None or self._summary[0] != second:
                summary = self.flow.summary(now)
                summary["watch"] = {"address": self.watch_state, "error": self.watch_error}
                self._summary = (second, summary)
            return self._summary[1]
