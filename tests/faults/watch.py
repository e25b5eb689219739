"""One WatchOrders stream, open on one Order replica for a whole scenario: what it saw end."""

from __future__ import annotations

import threading
import time

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from paysaga.v1 import orders_pb2, orders_pb2_grpc

STATUS_NAMES = {
    orders_pb2.ORDER_STATUS_COMPLETED: "COMPLETED",
    orders_pb2.ORDER_STATUS_FAILED: "FAILED",
}


class WatchStream:
    """Follows every order change from `address`; `ended` maps order id -> terminal status.

    Entered once subscribed (the server's initial metadata), so no change made after that
    is missed. A stream that breaks is not reopened: `error` says why it ended early.
    It is opened once the replica reports `paysaga.watch` SERVING: until its order-updates
    tail has caught up, a replica answers WatchOrders with UNAVAILABLE ("retry shortly"),
    as any client would be told.
    """

    def __init__(self, address: str) -> None:
        self.address = address
        self.ended: dict[str, str] = {}
        self.changes = 0
        self.error: str | None = None
        self._lock = threading.Lock()
        self._channel = grpc.insecure_channel(address)
        self._call: grpc.Call | None = None
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="watch-orders", daemon=True)

    def _wait_following(self, timeout_s: float = 60.0) -> None:
        health = health_pb2_grpc.HealthStub(self._channel)
        request = health_pb2.HealthCheckRequest(service="paysaga.watch")
        deadline = time.monotonic() + timeout_s
        serving = health_pb2.HealthCheckResponse.SERVING
        while True:
            try:
                if health.Check(request, timeout=5).status == serving:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.address} not following order changes in time")
            time.sleep(0.2)

    def __enter__(self) -> WatchStream:
        self._wait_following()
        self._call = orders_pb2_grpc.OrderServiceStub(self._channel).WatchOrders(
            orders_pb2.WatchOrdersRequest()
        )
        self._call.initial_metadata()  # blocks until the server has subscribed this stream
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._closing = True
        if self._call is not None:
            self._call.cancel()
        self._thread.join(10)
        self._channel.close()

    def _run(self) -> None:
        assert self._call is not None
        try:
            for response in self._call:
                order = response.order
                with self._lock:
                    self.changes += 1
                    if order.status in STATUS_NAMES:
                        self.ended.setdefault(order.id, STATUS_NAMES[order.status])
        except grpc.RpcError as exc:
            if not self._closing:
                self.error = f"{exc.code().name}: {exc.details()}"  # type: ignore[attr-defined]
        if not self._closing and self.error is None:
            self.error = "the server ended the stream"

    def missing(self, ids: set[str]) -> set[str]:
        """The orders of `ids` this stream has not seen end."""
        with self._lock:
            return ids - self.ended.keys()

    def wait_seen(self, ids: set[str], timeout_s: float) -> set[str]:
        """Wait until every order of `ids` was seen ending; those still not seen."""
        deadline = time.monotonic() + timeout_s
        while (left := self.missing(ids)) and self.error is None:
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
        return left
