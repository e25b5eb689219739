"""A bare grpcio unary echo server (`python -m bench.echo`) and the ceiling it gives."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from concurrent import futures
from typing import Any

import grpc

from bench.loadgen import Counters, closed_loop
from bench.procstat import CpuMeter
from bench.stack import free_port
from paysaga.v1 import orders_pb2

METHOD = "/bench.Echo/Echo"


def _handler(request: bytes, _context: Any) -> bytes:
    return request


async def _async_handler(request: bytes, _context: Any) -> bytes:
    return request


def _generic(handler: Any) -> grpc.GenericRpcHandler:
    # No (de)serializers: the request bytes come back as they are.
    return grpc.method_handlers_generic_handler(
        "bench.Echo", {"Echo": grpc.unary_unary_rpc_method_handler(handler)}
    )


def serve_sync(port: int, workers: int) -> None:
    """grpc.server with a ThreadPoolExecutor: the model the services use."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((_generic(_handler),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    server.wait_for_termination()


async def serve_aio(port: int) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_generic(_async_handler),))
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


def payload() -> bytes:
    """A CreateOrderRequest as the load generator sends it (~50 bytes)."""
    request = orders_pb2.CreateOrderRequest(
        user_id=3, product_id=2, request_id="bench-0123abcd-123456"
    )
    return request.SerializeToString()


async def _drive(
    address: str, concurrency: int, warmup_s: float, duration_s: float, cpu: CpuMeter
) -> tuple[float, float, dict[str, float | None]]:
    """Drive the echo; return (calls/s, calls, CPU seconds) of the measurement window."""
    async with grpc.aio.insecure_channel(address) as channel:
        await asyncio.wait_for(channel.channel_ready(), 15)
        echo = channel.unary_unary(METHOD)
        body = payload()
        counters = Counters()
        used: dict[str, float | None] = {}

        async def op() -> None:
            await echo(body, timeout=10)

        def progress(elapsed: float, measuring: bool) -> None:
            if int(elapsed) % 2 == 0:
                print(f"[echo] t={elapsed:4.0f}s calls={counters.done}", flush=True)

        def snapshot() -> dict[str, Any]:
            """At the window's start (starts the CPU meter) and end (reads it)."""
            if started:
                used.update(cpu.stop())
            else:
                cpu.start()
                started.append(True)
            return {"done": counters.done}

        started: list[bool] = []
        window = await closed_loop(
            op,
            concurrency=concurrency,
            warmup_s=warmup_s,
            duration_s=duration_s,
            snapshot=snapshot,
            progress=progress,
            counters=counters,
        )
        if counters.errors:
            print(f"[echo] {counters.errors} errors, e.g. {counters.first_errors[0]}", flush=True)
        calls = window.delta("done")
        return calls / window.seconds, calls, used


def echo_ceiling(
    model: str, *, concurrency: int, warmup_s: float, duration_s: float, workers: int = 64
) -> dict[str, Any]:
    """Start the echo server (`model` sync or aio) as its own process and drive it."""
    port = free_port()
    command = [sys.executable, "-m", "bench.echo", "--model", model, "--port", str(port)]
    server = subprocess.Popen([*command, "--workers", str(workers)], stdin=subprocess.DEVNULL)
    cpu = CpuMeter({"echo_server": server.pid, "loadgen": os.getpid()})
    try:
        rps, calls, used = asyncio.run(
            _drive(f"127.0.0.1:{port}", concurrency, warmup_s, duration_s, cpu)
        )
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    label = f"grpc.server + ThreadPoolExecutor({workers})" if model == "sync" else "grpc.aio.server"
    print(f"[echo] {label}: {rps:.0f} rps at concurrency {concurrency}", flush=True)
    server_s, client_s = used.get("echo_server"), used.get("loadgen")
    return {
        "model": label,
        "rps": round(rps, 1),
        "concurrency": concurrency,
        "duration_s": duration_s,
        "server_cpu_s": server_s,
        "client_cpu_s": client_s,
        # Server + client CPU per call: what a call costs whatever else runs on the machine.
        "cpu_ms_per_call": round((server_s + client_s) / calls * 1000, 3)
        if server_s is not None and client_s is not None and calls
        else None,
        "other_processes_cpu_s": used.get("other_processes"),
        "machine_busy_fraction": used.get("machine_busy_fraction"),
        "measured_at": time.strftime("%H:%M:%S"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.echo", description=__doc__)
    parser.add_argument("--model", choices=["sync", "aio"], default="sync")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=64)
    args = parser.parse_args()
    try:
        if args.model == "sync":
            serve_sync(args.port, args.workers)
        else:
            asyncio.run(serve_aio(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
