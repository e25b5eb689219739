"""Unexpected servicer exceptions reach the client as INTERNAL, without their details.

Both kinds of servicer method are covered: coroutines (run on the server's event loop) and
plain functions (run on its thread pool).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import pytest

from services.common.serving.grpc_app import GrpcApp
from services.common.serving.grpc_errors import INTERNAL_MESSAGE, abort, abort_async, echo

pytestmark = pytest.mark.unit


def boom(_request: bytes, _context: grpc.ServicerContext) -> bytes:
    raise ValueError("SELECT secret FROM table")


def refuse(_request: bytes, context: grpc.ServicerContext) -> bytes:
    abort(context, grpc.StatusCode.INVALID_ARGUMENT, "user_id must be positive")


async def boom_async(_request: bytes, _context: grpc.aio.ServicerContext) -> bytes:
    raise ValueError("SELECT secret FROM table")


async def refuse_async(_request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await abort_async(context, grpc.StatusCode.INVALID_ARGUMENT, "user_id must be positive")


async def stream_boom(_request: bytes, context: grpc.aio.ServicerContext) -> None:
    await context.write(b"first")
    raise ValueError("SELECT secret FROM table")


def _register(server: grpc.aio.Server) -> None:
    handlers: dict[str, Any] = {
        "Boom": grpc.unary_unary_rpc_method_handler(boom),
        "Refuse": grpc.unary_unary_rpc_method_handler(refuse),
        "BoomAsync": grpc.unary_unary_rpc_method_handler(boom_async),
        "RefuseAsync": grpc.unary_unary_rpc_method_handler(refuse_async),
        "Stream": grpc.unary_stream_rpc_method_handler(stream_boom),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", handlers)])


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    app = GrpcApp(
        address="127.0.0.1:0",
        service_names=[],
        register=_register,
        workers=[],
        readiness_checks=[],
        drain_s=0,
    )
    app.start()
    with grpc.insecure_channel(app.address) as chan:
        yield chan
    app.stop()


@pytest.mark.parametrize("method", ["Boom", "BoomAsync"])
def test_unexpected_error_is_internal_without_details(channel: grpc.Channel, method: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(f"/t.T/{method}")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == INTERNAL_MESSAGE


@pytest.mark.parametrize("method", ["Refuse", "RefuseAsync"])
def test_a_deliberate_status_passes_through(channel: grpc.Channel, method: str) -> None:
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary(f"/t.T/{method}")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "user_id must be positive"


def test_unexpected_error_in_a_stream_is_internal(channel: grpc.Channel) -> None:
    replies = channel.unary_stream("/t.T/Stream")(b"", timeout=5)
    assert next(replies) == b"first"
    with pytest.raises(grpc.RpcError) as err:
        next(replies)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (err.value.details() or "")


def test_echo_repeats_short_input_quoted() -> None:
    assert echo("not-a-uuid") == "'not-a-uuid'"
    assert echo("a\nb\x00") == "'a\\nb\\x00'"  # control characters never reach a terminal raw


def test_echo_cuts_long_input_to_a_prefix_and_says_how_long_it_was() -> None:
    sixty_kb = "x" * 60_000
    echoed = echo(sixty_kb)
    assert echoed == f"{'x' * 64!r}…(60000 characters)"
    assert echo("y" * 65, limit=64).endswith("…(65 characters)")
    assert echo("z" * 64) == repr("z" * 64)
