"""Server-sent events: a page opens an EventSource and the console pushes to it.

`events(...)` turns a producer into a text/event-stream response: every `interval_s` it asks
the producer for the events to send now (maybe none), sends a comment as a heartbeat when
there was nothing for a while (so proxies keep the stream open and a gone browser is
noticed), and ends when the console stops. Starlette cancels the generator when the browser
goes away; the browser's EventSource reconnects by itself after `retry`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable

from starlette.responses import StreamingResponse

#: What one push is: (event name, data); data that is not a str is sent as JSON.
Event = tuple[str, object]
HEARTBEAT_S = 15.0
RETRY_MS = 2000


def format_event(name: str, data: object) -> str:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    lines = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"event: {name}\n{lines}\n"


def events(
    produce: Callable[[], Awaitable[list[Event]]],
    interval_s: float,
    stopping: asyncio.Event,
) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        quiet = 0.0
        while not stopping.is_set():
            sent = await produce()
            for name, data in sent:
                yield format_event(name, data)
            quiet = 0.0 if sent else quiet + interval_s
            if quiet >= HEARTBEAT_S:
                quiet = 0.0
                yield ": still here\n\n"
            try:
                await asyncio.wait_for(stopping.wait(), timeout=interval_s)
            except TimeoutError:
                pass

    return StreamingResponse(
        body(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


def changed_fragments(
    render: Callable[[], Awaitable[str]], name: str = "fragment"
) -> Callable[[], Awaitable[list[Event]]]:
    """A producer that sends the rendered HTML only when it differs from the last sent."""
    last: list[str] = [""]

    async def produce() -> list[Event]:
        html = await render()
        if html == last[0]:
            return []
        last[0] = html
        return [(name, html)]

    return produce
