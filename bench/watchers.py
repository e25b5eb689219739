"""N WatchOrders streams held open on the Order service in a child process, and what they got.

The streams live in a child process (`python -m bench.watchers`), so that reading them does
not slow down the load generator's event loop, and they are spread over several channels,
each with its own connections (a local subchannel pool) to every Order replica
(round_robin: bench/balancing.py), as many clients' would be.

What the streams watch (`scope`):
- quiet: each a user who places no bench orders, as dashboards of idle users: the streams
  cost the server memory and keepalive pings, and no change is sent to them;
- users: the bench's users 1..5 in turn: every change is sent to N/5 streams;
- all: every order: every change is sent to all N streams.

With a request-id `prefix`, every change of an order whose request_id starts with it is
recorded (stream, order, version, delay from the change's update_time), so that the
parent can have it accounted (bench/watch_accounting.py). A stream the server ends for
falling behind (RESOURCE_EXHAUSTED) or for shutting down (UNAVAILABLE) resumes from its last
resume_token, as a client should.

Protocol with the parent: the child prints `OPENED <json>` once every stream is subscribed
(its initial metadata received) or failed, holds them until its stdin closes (after an
optional `ORDERS <json>` line: the phase's orders to account), waits up to the settle time
for their changes to arrive, then prints `RESULT <json>` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from array import array
from collections import Counter
from collections.abc import Callable
from typing import Any

import grpc

from bench.balancing import balanced_channel, split_addresses
from bench.stats import summary_ms
from bench.watch_accounting import ALL_USERS, Receipts, account, expected_deliveries
from paysaga.v1 import orders_pb2, orders_pb2_grpc

SCOPES = ("quiet", "users", "all")
#: First user id of the quiet scope: far above the bench's users (1..5).
QUIET_USER_BASE = 1_000_000
#: The header a WatchOrders stream sends once registered (no change is missed after it).
SUBSCRIBED = ("paysaga-watch", "subscribed")
#: Stream ends after which a stream resumes from its last resume_token.
RESUME_CODES = (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
MAX_RESUMES_PER_STREAM = 20
#: What a stream that never subscribed "watches": no user, so no change is expected of it.
NOT_WATCHING = -1


def watched_user(index: int, scope: str) -> int:
    """The user stream `index` watches (ALL_USERS: every order)."""
    if scope == "quiet":
        return QUIET_USER_BASE + index
    if scope == "users":
        return 1 + index % 5
    return ALL_USERS


def _failed_unless_subscribed(subscribed: asyncio.Future[bool]) -> Callable[[Any], None]:
    """A done-callback: a stream whose task ended before it subscribed (an unexpected error)
    failed to open."""

    def done(_: Any) -> None:
        if not subscribed.done():
            subscribed.set_result(False)

    return done


class Streams:
    """The streams of the child process and what happened on them."""

    def __init__(
        self, addresses: list[str], count: int, channels: int, scope: str, prefix: str = ""
    ) -> None:
        # A local subchannel pool per channel: connections of its own, not shared ones.
        options = [("grpc.use_local_subchannel_pool", 1)]
        self.channels = [balanced_channel(addresses, options) for _ in range(max(1, channels))]
        self.count = count
        self.scope = scope
        self.prefix = prefix
        self.watching = [watched_user(i, scope) for i in range(count)]
        self.calls: list[grpc.aio.UnaryStreamCall | None] = [None] * count
        self.tasks: list[asyncio.Task[None]] = []
        self.errors: Counter[str] = Counter()
        self.first_errors: list[str] = []
        self.responses = 0
        self.initial_state = 0
        self.ended_early = 0
        self.resumes = 0
        #: Why streams were resumed: status code name -> times.
        self.resume_ends: Counter[str] = Counter()
        self.closing = False
        self.receipts = Receipts(count)
        #: Seconds from each recorded change's update_time to its arrival here.
        self.lags: array[float] = array("d")
        self.first_at = self.last_at = 0.0

    def _error(self, where: str, code: grpc.StatusCode | None, details: str | None) -> None:
        name = code.name if code is not None else "UNKNOWN"
        self.errors[f"{where}:{name}"] += 1
        if len(self.first_errors) < 3:
            self.first_errors.append(f"{where}: {name} {details or ''}".strip()[:300])

    async def open(self, timeout_s: float) -> dict[str, Any]:
        """Start every stream; wait until each is subscribed or failed (or the timeout)."""
        began = time.perf_counter()
        loop = asyncio.get_running_loop()
        subscribed: list[asyncio.Future[bool]] = [loop.create_future() for _ in range(self.count)]
        for i in range(self.count):
            task = asyncio.create_task(self._hold(i, subscribed[i], timeout_s))
            task.add_done_callback(_failed_unless_subscribed(subscribed[i]))
            self.tasks.append(task)
        ok = await asyncio.gather(*subscribed)
        for i, subscribed_ok in enumerate(ok):
            if not subscribed_ok:
                self.watching[i] = NOT_WATCHING  # never opened: nothing is expected of it
        opened = sum(ok)
        return {
            "requested": self.count,
            "opened": opened,
            "channels": len(self.channels),
            "scope": self.scope,
            "open_s": round(time.perf_counter() - began, 2),
            "errors": dict(self.errors),
            "first_errors": list(self.first_errors),
        }

    async def _subscribed(
        self, call: grpc.aio.UnaryStreamCall, timeout_s: float
    ) -> tuple[grpc.StatusCode, str] | None:
        """None once the stream is registered, else why not (status code, details)."""
        try:
            metadata = await asyncio.wait_for(call.initial_metadata(), timeout_s)
        except TimeoutError:
            call.cancel()
            return grpc.StatusCode.DEADLINE_EXCEEDED, f"not subscribed within {timeout_s:g} s"
        except grpc.aio.AioRpcError as exc:
            return exc.code(), exc.details() or ""
        if SUBSCRIBED in tuple(metadata or ()):
            return None
        # No subscription header: the call ended at once (refused); its status says why.
        return await call.code(), await call.details() or ""

    async def _hold(self, index: int, subscribed: asyncio.Future[bool], timeout_s: float) -> None:
        """Keep stream `index` open: subscribe, read, and resume from the last resume_token
        after a RESUME_CODES end (or refusal of the resumed stream), a few times."""
        stub = orders_pb2_grpc.OrderServiceStub(self.channels[index % len(self.channels)])
        request = orders_pb2.WatchOrdersRequest(user_id=self.watching[index])
        resumes = 0
        last: orders_pb2.WatchOrdersResponse | None = None
        while True:
            if last is not None:
                request.resume_token = last.resume_token
            call = stub.WatchOrders(request)
            self.calls[index] = call
            ended = await self._subscribed(call, timeout_s)
            if ended is None:
                if not subscribed.done():
                    subscribed.set_result(True)
                try:
                    async for response in call:
                        last = response
                        self._receive(index, response)
                    ended = grpc.StatusCode.OK, "the server ended the stream with OK"
                except grpc.aio.AioRpcError as exc:
                    ended = exc.code(), exc.details() or ""
            code, details = ended
            if self.closing or code == grpc.StatusCode.CANCELLED:
                return
            where = "open" if not subscribed.done() else "held"
            if where == "held" and code in RESUME_CODES and resumes < MAX_RESUMES_PER_STREAM:
                resumes += 1
                self.resumes += 1
                self.resume_ends[code.name] += 1
                await asyncio.sleep(min(1.0, 0.05 * resumes))
                continue
            self._error(where, code, details)
            if where == "open":
                subscribed.set_result(False)
            else:
                self.ended_early += 1
            return

    def _receive(self, index: int, response: orders_pb2.WatchOrdersResponse) -> None:
        self.responses += 1
        order = response.order
        ours = bool(self.prefix) and order.request_id.startswith(self.prefix)
        if response.initial_state:
            self.initial_state += 1
            if ours:
                # Made after the stream was subscribed but before the server read its
                # initial state: the client has the order as of this version, as initial
                # state (those changes are then not sent again). Counted once each, as
                # deliveries: a later copy of any of them is a duplicate.
                for version in range(1, order.version + 1):
                    self.receipts.add(index, order.id, version)
            return
        if not ours:
            return
        now = time.time()
        changed = order.update_time if order.update_time.seconds else order.create_time
        self.lags.append(now - (changed.seconds + changed.nanos * 1e-9))
        self.receipts.add(index, order.id, order.version)
        self.first_at = self.first_at or now
        self.last_at = now

    async def settle(self, truth: dict[str, tuple[int, int]], timeout_s: float) -> float:
        """Wait until every stream has each change of the `truth` orders (or the timeout)."""
        began = time.perf_counter()
        while time.perf_counter() - began < timeout_s:
            received = self.receipts.received(truth)
            if received >= expected_deliveries(truth, self.watching, self.receipts):
                if account(truth, self.watching, self.receipts).missed == 0:
                    break
            await asyncio.sleep(0.2)
        return time.perf_counter() - began

    async def close(self) -> dict[str, Any]:
        open_at_end = sum(1 for task in self.tasks if not task.done())
        self.closing = True
        for call in self.calls:
            if call is not None:
                call.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await asyncio.gather(*(channel.close() for channel in self.channels))
        return {
            "open_at_end": open_at_end,
            "ended_early": self.ended_early,
            "resumed": self.resumes,
            "resumed_after": dict(self.resume_ends),
            "responses": self.responses,
            "initial_state": self.initial_state,
            "errors": dict(self.errors),
            "first_errors": list(self.first_errors),
        }

    def accounted(self, truth: dict[str, tuple[int, int]], settle_s: float) -> dict[str, Any]:
        """What the phase's orders' changes did: accounting, delays, deliveries per second."""
        checked = account(truth, self.watching, self.receipts)
        span = self.last_at - self.first_at
        return {
            "accounting": checked.as_dict(),
            "lag": summary_ms(self.lags),
            "deliveries_per_s": round(checked.delivered / span, 1) if span > 0 else None,
            "delivery_span_s": round(span, 2),
            "settle_s": round(settle_s, 2),
        }


def _parent_lines() -> dict[str, tuple[int, int]] | None:
    """Read stdin to its end; the `ORDERS` line's orders, if one came."""
    truth = None
    for line in sys.stdin:
        if line.startswith("ORDERS "):
            truth = {k: (int(u), int(v)) for k, (u, v) in json.loads(line[7:]).items()}
    return truth


async def _child(args: argparse.Namespace) -> None:
    addresses = split_addresses(args.address)
    streams = Streams(addresses, args.count, args.channels, args.scope, args.prefix)
    opened = await streams.open(args.open_timeout)
    print("OPENED " + json.dumps(opened), flush=True)
    # Hold until the parent closes our stdin.
    truth = await asyncio.get_running_loop().run_in_executor(None, _parent_lines)
    settle_s = await streams.settle(truth, args.settle_timeout) if truth else 0.0
    result = await streams.close()
    if truth is not None:
        result |= streams.accounted(truth, settle_s)
    print("RESULT " + json.dumps(result), flush=True)


class WatchersProcess:
    """The parent's handle on the child process that holds the streams."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.opened: dict[str, Any] = {}
        self.settle_timeout_s = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(
        cls,
        addresses: list[str],
        *,
        count: int,
        channels: int,
        scope: str,
        open_timeout_s: float,
        prefix: str = "",
        settle_timeout_s: float = 15.0,
    ) -> WatchersProcess:
        """Start the child and return once it has opened its streams (or failed to)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.watchers",
            *("--address", ",".join(addresses), "--count", str(count)),
            *("--channels", str(channels), "--scope", scope, "--prefix", prefix),
            *("--open-timeout", str(open_timeout_s), "--settle-timeout", str(settle_timeout_s)),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        watchers = cls(process)
        watchers.settle_timeout_s = settle_timeout_s
        watchers.opened = await asyncio.wait_for(watchers._line("OPENED "), open_timeout_s + 30)
        return watchers

    async def _line(self, prefix: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        while line := (await self.process.stdout.readline()).decode():
            if line.startswith(prefix):
                result: dict[str, Any] = json.loads(line[len(prefix) :])
                return result
            print(f"[watchers] {line.rstrip()}", flush=True)
        raise RuntimeError(f"bench.watchers exited ({await self.process.wait()}) before {prefix}")

    async def stop(self, truth: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
        """Close the streams, once `truth`'s changes arrived (or after the settle timeout the
        child was started with); return what the streams saw."""
        assert self.process.stdin is not None
        if truth is not None:
            self.process.stdin.write(("ORDERS " + json.dumps(truth) + "\n").encode())
            await self.process.stdin.drain()
        self.process.stdin.close()
        try:
            closed = await asyncio.wait_for(self._line("RESULT "), self.settle_timeout_s + 60)
        finally:
            if self.process.returncode is None:
                try:
                    await asyncio.wait_for(self.process.wait(), 10)
                except TimeoutError:
                    self.process.kill()
                    await self.process.wait()
        # The child's errors and first_errors are cumulative: those at close replace those
        # reported when the streams opened.
        return {**self.opened, **closed}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.watchers", description=__doc__)
    parser.add_argument("--address", required=True, help="the Order replicas, host:port,...")
    parser.add_argument("--count", type=int, default=1000, help="streams (%(default)s)")
    parser.add_argument("--channels", type=int, default=10, help="channels (%(default)s)")
    parser.add_argument("--scope", choices=SCOPES, default="quiet", help="what they watch")
    parser.add_argument("--prefix", default="", help="record changes of these request ids")
    parser.add_argument("--open-timeout", type=float, default=60.0, help="seconds to subscribe")
    parser.add_argument(
        "--settle-timeout",
        type=float,
        default=15.0,
        help="seconds to wait, after the load, for its changes to arrive (%(default)s)",
    )
    args = parser.parse_args()
    asyncio.run(_child(args))


if __name__ == "__main__":
    main()
