"""The `watchers` phase: N WatchOrders streams held open on the Order service meanwhile.

The streams live in a child process (`python -m bench.watchers`), so that reading them does
not slow down the load generator's event loop, and they are spread over several channels,
each with its own connection (a local subchannel pool), as many clients' would be.

What the streams watch (`scope`):
- quiet: each a user who places no bench orders, as dashboards of idle users: the streams
  cost the server memory and keepalive pings, and no change is sent to them;
- users: the bench's users 1..5 in turn: every change is sent to N/5 streams;
- all: every order: every change is sent to all N streams.

Protocol with the parent: the child prints `OPENED <json>` once every stream is subscribed
(its initial metadata received) or failed, holds them until its stdin closes, then prints
`RESULT <json>` and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from typing import Any

import grpc

from paysaga.v1 import orders_pb2, orders_pb2_grpc

SCOPES = ("quiet", "users", "all")
#: First user id of the quiet scope: far above the bench's users (1..5).
QUIET_USER_BASE = 1_000_000
#: The header a WatchOrders stream sends once registered (no change is missed after it).
SUBSCRIBED = ("paysaga-watch", "subscribed")


def watch_request(index: int, scope: str) -> orders_pb2.WatchOrdersRequest:
    if scope == "quiet":
        return orders_pb2.WatchOrdersRequest(user_id=QUIET_USER_BASE + index)
    if scope == "users":
        return orders_pb2.WatchOrdersRequest(user_id=1 + index % 5)
    return orders_pb2.WatchOrdersRequest()


class Streams:
    """The streams of the child process and what happened on them."""

    def __init__(self, address: str, count: int, channels: int, scope: str) -> None:
        # A local subchannel pool per channel: one TCP connection each, not one shared.
        options = [("grpc.use_local_subchannel_pool", 1)]
        self.channels = [
            grpc.aio.insecure_channel(address, options=options) for _ in range(max(1, channels))
        ]
        self.count = count
        self.scope = scope
        self.calls: list[grpc.aio.UnaryStreamCall] = []
        self.readers: list[asyncio.Task[None]] = []
        self.errors: Counter[str] = Counter()
        self.first_errors: list[str] = []
        self.responses = 0
        self.initial_state = 0
        self.ended_early = 0

    def _error(self, where: str, code: grpc.StatusCode | None, details: str | None) -> None:
        name = code.name if code is not None else "UNKNOWN"
        self.errors[f"{where}:{name}"] += 1
        if len(self.first_errors) < 3:
            self.first_errors.append(f"{where}: {name} {details or ''}".strip()[:300])

    async def open(self, timeout_s: float) -> dict[str, Any]:
        """Start every stream; wait until each is subscribed or failed (or the timeout)."""
        began = time.perf_counter()
        for i in range(self.count):
            stub = orders_pb2_grpc.OrderServiceStub(self.channels[i % len(self.channels)])
            self.calls.append(stub.WatchOrders(watch_request(i, self.scope)))
        done = await asyncio.gather(
            *(self._subscribed(call, timeout_s) for call in self.calls), return_exceptions=True
        )
        opened = [call for call, ok in zip(self.calls, done, strict=True) if ok is True]
        for call, ok in zip(self.calls, done, strict=True):
            if ok is not True:
                call.cancel()
        self.readers = [asyncio.create_task(self._read(call)) for call in opened]
        return {
            "requested": self.count,
            "opened": len(opened),
            "channels": len(self.channels),
            "scope": self.scope,
            "open_s": round(time.perf_counter() - began, 2),
            "errors": dict(self.errors),
            "first_errors": list(self.first_errors),
        }

    async def _subscribed(self, call: grpc.aio.UnaryStreamCall, timeout_s: float) -> bool:
        try:
            metadata = await asyncio.wait_for(call.initial_metadata(), timeout_s)
        except TimeoutError:
            late = f"not subscribed within {timeout_s:g} s"
            self._error("open", grpc.StatusCode.DEADLINE_EXCEEDED, late)
            return False
        except grpc.aio.AioRpcError as exc:
            self._error("open", exc.code(), exc.details())
            return False
        if SUBSCRIBED in tuple(metadata or ()):
            return True
        # No subscription header: the call ended at once (refused); its status says why.
        code = await call.code()
        self._error("open", code, await call.details())
        return False

    async def _read(self, call: grpc.aio.UnaryStreamCall) -> None:
        try:
            async for response in call:
                self.responses += 1
                if response.initial_state:
                    self.initial_state += 1
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return
            self._error("held", exc.code(), exc.details())
        self.ended_early += 1

    async def close(self) -> dict[str, Any]:
        open_at_end = sum(1 for task in self.readers if not task.done())
        for call in self.calls:
            call.cancel()
        await asyncio.gather(*self.readers, return_exceptions=True)
        await asyncio.gather(*(channel.close() for channel in self.channels))
        return {
            "open_at_end": open_at_end,
            "ended_early": self.ended_early,
            "responses": self.responses,
            "initial_state": self.initial_state,
            "errors": dict(self.errors),
            "first_errors": list(self.first_errors),
        }


async def _child(args: argparse.Namespace) -> None:
    streams = Streams(args.address, args.count, args.channels, args.scope)
    opened = await streams.open(args.open_timeout)
    print("OPENED " + json.dumps(opened), flush=True)
    # Hold until the parent closes our stdin.
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    print("RESULT " + json.dumps(await streams.close()), flush=True)


class WatchersProcess:
    """The parent's handle on the child process that holds the streams."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.opened: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(
        cls, address: str, *, count: int, channels: int, scope: str, open_timeout_s: float
    ) -> WatchersProcess:
        """Start the child and return once it has opened its streams (or failed to)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.watchers",
            "--address",
            address,
            "--count",
            str(count),
            "--channels",
            str(channels),
            "--scope",
            scope,
            "--open-timeout",
            str(open_timeout_s),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        watchers = cls(process)
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

    async def stop(self) -> dict[str, Any]:
        """Close the streams; return what the phase saw (opened, still open at the end...)."""
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            closed = await asyncio.wait_for(self._line("RESULT "), 60)
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
    parser.add_argument("--address", required=True, help="the Order service, host:port")
    parser.add_argument("--count", type=int, default=1000, help="streams (%(default)s)")
    parser.add_argument("--channels", type=int, default=10, help="connections (%(default)s)")
    parser.add_argument("--scope", choices=SCOPES, default="quiet", help="what they watch")
    parser.add_argument("--open-timeout", type=float, default=60.0, help="seconds to subscribe")
    args = parser.parse_args()
    asyncio.run(_child(args))


if __name__ == "__main__":
    main()
