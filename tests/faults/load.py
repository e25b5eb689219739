"""A steady stream of CreateOrder calls over the Order replicas, retried like a real client."""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from paysaga.v1 import orders_pb2, orders_pb2_grpc

log = logging.getLogger(__name__)

#: Retried with the same request_id (safe: CreateOrder is idempotent by it). CANCELLED is
#: what grpcio answers calls queued but not started when a server stops gracefully.
RETRYABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.CANCELLED,
)


@dataclass(frozen=True)
class Accepted:
    """An order CreateOrder accepted, as the client saw it."""

    order_id: str
    user_id: int
    product_id: int
    request_id: str
    attempts: int
    at: float


class LoadGenerator:
    """`threads` clients sharing `rate` orders/s over `users` x `products`, fresh request_ids.

    Client i sends to replica i mod len(addresses), so the load is spread over them. A
    call failing with UNAVAILABLE or DEADLINE_EXCEEDED is retried with the same request_id
    on the next replica (the same one if there is one only) until it is accepted (also
    after stop(), for up to `give_up_s`).
    """

    def __init__(
        self,
        addresses: str | Sequence[str],
        *,
        rate: float = 40.0,
        threads: int = 4,
        users: tuple[int, ...] = (1, 2, 3, 4, 5),
        products: tuple[int, ...] = (1, 2, 3, 4, 5),
        give_up_s: float = 90.0,
        seed: int = 0,
    ) -> None:
        self.addresses = [addresses] if isinstance(addresses, str) else list(addresses)
        self.rate = rate
        self.threads = threads
        self.users = users
        self.products = products
        self.give_up_s = give_up_s
        self.accepted: list[Accepted] = []
        self.sent = 0
        self.retries = 0
        #: Accepted orders by the replica (index in `addresses`) that accepted them.
        self.accepted_by = [0] * len(self.addresses)
        self.rejected: list[str] = []
        self.abandoned: list[str] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._stopped_at = 0.0
        self._random = random.Random(seed)
        self._workers = [
            threading.Thread(target=self._run, args=(i,), name=f"load-{i}", daemon=True)
            for i in range(threads)
        ]

    def __enter__(self) -> LoadGenerator:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        for worker in self._workers:
            worker.start()

    def stop(self) -> None:
        """Stop sending new orders; wait until every order in flight is accepted or given up."""
        self._stopped_at = time.monotonic()
        self._stopping.set()
        for worker in self._workers:
            worker.join(self.give_up_s + 30)

    def accepted_ids(self) -> set[str]:
        with self._lock:
            return {a.order_id for a in self.accepted}

    def _pick(self) -> tuple[int, int]:
        with self._lock:
            return self._random.choice(self.users), self._random.choice(self.products)

    def _run(self, index: int) -> None:
        interval = self.threads / self.rate
        next_at = time.monotonic() + index * interval / self.threads
        channels = [grpc.insecure_channel(address) for address in self.addresses]
        stubs = [orders_pb2_grpc.OrderServiceStub(channel) for channel in channels]
        try:
            while not self._stopping.is_set():
                delay = next_at - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                next_at = max(next_at + interval, time.monotonic() - interval)
                self._order(stubs, index % len(stubs), *self._pick())
        finally:
            for channel in channels:
                channel.close()

    def _order(
        self,
        stubs: list[orders_pb2_grpc.OrderServiceStub],
        replica: int,
        user_id: int,
        product_id: int,
    ) -> None:
        request = orders_pb2.CreateOrderRequest(
            user_id=user_id, product_id=product_id, request_id=str(uuid.uuid4())
        )
        with self._lock:
            self.sent += 1
        attempts, backoff = 0, 0.05
        while True:
            attempts += 1
            try:
                reply = stubs[replica].CreateOrder(request, timeout=5.0)
            except grpc.RpcError as exc:
                code = exc.code()  # type: ignore[attr-defined]
                late = self._stopping.is_set() and (
                    time.monotonic() - self._stopped_at > self.give_up_s
                )
                if code in RETRYABLE and not late:
                    with self._lock:
                        self.retries += 1
                    replica = (replica + 1) % len(stubs)  # the other replica, if there is one
                    time.sleep(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                with self._lock:
                    target = self.abandoned if code in RETRYABLE else self.rejected
                    target.append(f"{request.request_id}: {code.name} {exc.details()}")  # type: ignore[attr-defined]
                return
            accepted = Accepted(
                reply.order.id, user_id, product_id, request.request_id, attempts, time.monotonic()
            )
            with self._lock:
                self.accepted.append(accepted)
                self.accepted_by[replica] += 1
            return
