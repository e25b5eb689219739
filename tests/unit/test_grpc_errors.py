"""Unexpected servicer exceptions reach the client as INTERNAL, without their details."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures
from typing import Any

import grpc
import pytest

from services.common.grpc_errors import INTERNAL_MESSAGE, UnexpectedErrors, abort

pytestmark = pytest.mark.unit


def boom(_request: bytes, _context: grpc.ServicerContext) -> bytes:
    raise ValueError("SELECT secret FROM table")


def refuse(_request: bytes, context: grpc.ServicerContext) -> bytes:
    abort(context, grpc.StatusCode.INVALID_ARGUMENT, "user_id must be positive")


def stream_boom(_request: bytes, _context: grpc.ServicerContext) -> Iterator[bytes]:
    yield b"first"
    raise ValueError("SELECT secret FROM table")


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    server = grpc.server(futures.ThreadPoolExecutor(4), interceptors=[UnexpectedErrors()])
    handlers: dict[str, Any] = {
        "Boom": grpc.unary_unary_rpc_method_handler(boom),
        "Refuse": grpc.unary_unary_rpc_method_handler(refuse),
        "Stream": grpc.unary_stream_rpc_method_handler(stream_boom),
    }
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.T", handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as chan:
        yield chan
    server.stop(None)


def test_unexpected_error_is_internal_without_details(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/t.T/Boom")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == INTERNAL_MESSAGE


def test_a_deliberate_status_passes_through(channel: grpc.Channel) -> None:
    with pytest.raises(grpc.RpcError) as err:
        channel.unary_unary("/t.T/Refuse")(b"", timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == "user_id must be positive"


def test_unexpected_error_in_a_stream_is_internal(channel: grpc.Channel) -> None:
    replies = channel.unary_stream("/t.T/Stream")(b"", timeout=5)
    assert next(replies) == b"first"
    with pytest.raises(grpc.RpcError) as err:
        next(replies)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert "secret" not in (err.value.details() or "")
