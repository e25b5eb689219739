"""The client processes of `python -m bench.fanout`: its WatchOrders streams and its probe.

`python -m bench.fanout_clients streams|probe --address A ...`, started by bench.fanout
(the arguments are its own). The streams print `OPENED <json>` once every stream is
subscribed, then read until a line `END <changes published> <drain s>` comes on stdin,
wait for the last deliveries and print `RESULT <json>`; the probe prints `RESULT <json>`
after `--duration` seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.stats import summary_ms
from paysaga.v1 import orders_pb2, orders_pb2_grpc

#: The probe's user: none of the watched users (1..--users).
PROBE_USER = 1_000_000
RECONNECT = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)


class Watch:
    """One stream: what it got, once or twice, and how late."""

    def __init__(self, stub: orders_pb2_grpc.OrderServiceStub, user_id: int, lags: list[float]):
        self.stub, self.user_id, self.lags = stub, user_id, lags
        self.seen: set[int] = set()
        self.duplicated = 0
        self.reconnects = 0
        self.error = ""
        self.token = ""
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def follow(self) -> None:
        while True:
            call = self.stub.WatchOrders(
                orders_pb2.WatchOrdersRequest(user_id=self.user_id, resume_token=self.token)
            )
            try:
                await call.initial_metadata()
                if not self.subscribed.done():
                    self.subscribed.set_result(None)
                async for response in call:
                    self.token = response.resume_token
                    if response.initial_state:
                        continue
                    seq = int(response.order.id.rsplit("-", 1)[1])
                    if seq in self.seen:
                        self.duplicated += 1
                    else:
                        self.seen.add(seq)
                        sent = response.order.update_time.ToNanoseconds() / 1e9
                        self.lags.append(time.time() - sent)
                return
            except grpc.aio.AioRpcError as exc:
                if exc.code() in RECONNECT:
                    self.reconnects += 1
                    continue
                if exc.code() != grpc.StatusCode.CANCELLED:
                    self.error = f"{exc.code().name}: {exc.details()}"
                if not self.subscribed.done():
                    self.subscribed.set_result(None)
                return


async def _streams(args: argparse.Namespace) -> None:
    options = [("grpc.use_local_subchannel_pool", 1)]
    channels = [
        grpc.aio.insecure_channel(args.address, options=options) for _ in range(args.channels)
    ]
    lags: list[float] = []
    watches = [
        Watch(
            orders_pb2_grpc.OrderServiceStub(channels[i % len(channels)]),
            0 if args.scope == "all" else 1 + i % args.users,
            lags,
        )
        for i in range(args.streams)
    ]
    tasks = [asyncio.create_task(w.follow()) for w in watches]
    await asyncio.gather(*(w.subscribed for w in watches))
    print("OPENED " + json.dumps({"opened": sum(not w.error for w in watches)}), flush=True)
    line = await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    _, published, drain_s = line.split()
    expected = [
        int(published) if not w.user_id else len(range(w.user_id - 1, int(published), args.users))
        for w in watches
    ]
    last_at, total = time.time(), -1
    while time.time() - last_at < float(drain_s):  # until nothing more arrives
        now_total = sum(len(w.seen) for w in watches)
        if now_total != total:
            total, last_at = now_total, time.time()
        if total == sum(expected):
            break
        await asyncio.sleep(0.05)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    errors = sorted({w.error for w in watches if w.error})
    result = {
        "delivered": total,
        "last_at": last_at,
        "missed": sum(max(0, e - len(w.seen)) for w, e in zip(watches, expected, strict=True)),
        "duplicated": sum(w.duplicated for w in watches),
        "reconnects": sum(w.reconnects for w in watches),
        "errors": errors[:3],
        "lag": summary_ms(lags),
    }
    print("RESULT " + json.dumps(result), flush=True)


def _probe(args: argparse.Namespace) -> None:
    """CreateOrder (the group commit: a thread and the disk), then a health check (the gRPC
    loop alone), one at a time."""
    creates: list[float] = []
    checks: list[float] = []
    errors: list[str] = []
    with grpc.insecure_channel(args.address) as channel:
        stub = orders_pb2_grpc.OrderServiceStub(channel)
        health = health_pb2_grpc.HealthStub(channel)
        end = time.perf_counter() + args.duration
        while time.perf_counter() < end:
            request = orders_pb2.CreateOrderRequest(
                user_id=PROBE_USER, product_id=1, request_id=str(uuid.uuid4())
            )
            try:
                began = time.perf_counter()
                stub.CreateOrder(request, timeout=30)
                creates.append(time.perf_counter() - began)
                began = time.perf_counter()
                health.Check(health_pb2.HealthCheckRequest(), timeout=30)
                checks.append(time.perf_counter() - began)
            except grpc.RpcError as exc:
                errors.append(f"{exc.code().name}: {exc.details()}")  # type: ignore[attr-defined]
            time.sleep(args.interval)
    result = {"latency": summary_ms(creates), "health": summary_ms(checks), "errors": errors[:3]}
    print("RESULT " + json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("role", choices=["streams", "probe"])
    parser.add_argument("--address", required=True)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--channels", type=int, default=10)
    parser.add_argument("--scope", choices=["all", "users"], default="users")
    parser.add_argument("--users", type=int, default=5)
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--interval", type=float, default=0.05)
    args = parser.parse_args()
    if args.role == "streams":
        asyncio.run(_streams(args))
    else:
        _probe(args)


if __name__ == "__main__":
    main()
