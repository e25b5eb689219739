"""Turns to write: which WatchOrders streams send now, so that unary calls never queue behind them.

Every stream writes on the gRPC event loop, the loop that also runs CreateOrder, GetOrder,
ListOrders and health. A change watched by 5,000 streams is 5,000 writes; were they all
woken at once, every unary call arriving meanwhile would wait behind all of them. Instead a
stream that has changes to send waits for a turn: at most `max_writing` streams hold one at
a time, each writes up to a turn's worth of messages, then gives it back and queues again if
it has more. The loop's queue therefore never holds more than `max_writing` streams' work
ahead of a unary call, whatever the number of streams; the deliveries themselves go as fast
as the loop allows, since a turn is only a few writes long.

A turn that is slow (a client that reads nothing fills its flow-control window, and the
write waits) gives its place up after `max_turn_s`, so slow clients cannot hold every turn.
Such a stream ends as before: when it falls too far behind, or when one write has waited
`write_timeout_s` (RESOURCE_EXHAUSTED either way); a stream the feed ends while its write
waits is interrupted at once. One timer watches every turn, rather than one per write, and
a stream is only ever interrupted while suspended in a write, where it expects it.

The feed's thread (services.order.feed) tells the loop which idle streams it gave changes to
(`ready`, once per change); everything else here runs on the loop only.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable, Sized


class Writer:
    """A stream as the turns see it: whether it has something to send, and where it waits.

    `pending` and `ended` are the feed's (services.order.feed.Watcher); the rest is the
    loop's. `idle` is read by the fan-out thread too, as a hint of whom to wake: it is set
    before the stream looks at `pending` once more, so no change is left unannounced.
    """

    #: Changes not yet sent.
    pending: Sized
    #: Why the stream must end now; None while it may go on.
    ended: str | None

    def __init__(self) -> None:
        #: Waiting for changes, not queued for a turn.
        self.idle = False
        #: Resolved when the stream may write (while it waits for a turn).
        self.turn: asyncio.Future[None] | None = None
        #: The stream's task, to interrupt a write that waits on its client.
        self.task: asyncio.Task[None] | None = None
        #: When the write under way began (None between writes): the stream's task is then
        #: suspended in that write, the one place where it may be interrupted.
        self.writing_since: float | None = None
        #: Set when its write was interrupted to end it, and whether for the write timeout.
        self.cancelled_to_end = False
        self.timed_out = False


class WriteTurns:
    """Admits streams to write, `max_writing` at a time, in the order they became ready."""

    def __init__(
        self,
        *,
        max_writing: int = 32,
        max_turn_s: float = 0.05,
        write_timeout_s: float = 30.0,
    ) -> None:
        self.max_writing = max_writing
        self.max_turn_s = max_turn_s
        self.write_timeout_s = write_timeout_s
        self._queue: deque[Writer] = deque()
        #: Streams holding a turn, and when it began.
        self._writing: dict[Writer, float] = {}
        #: Streams whose turn was taken back while their write waits, and when it began.
        self._slow: dict[Writer, float] = {}
        self._checking: asyncio.TimerHandle | None = None

    async def wait(self, watcher: Writer) -> None:
        """Until `watcher` has something to send (or must end) and holds a turn."""
        turn = asyncio.get_running_loop().create_future()
        watcher.turn = turn
        watcher.idle = True
        if watcher.pending or watcher.ended:
            self._enqueue(watcher)
            self._admit()
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self.done(watcher)  # given a turn, then its call ended before it could write
            raise
        finally:
            watcher.turn = None
            watcher.idle = False

    def done(self, watcher: Writer) -> None:
        """`watcher`'s turn is over (it wrote its share, or ended)."""
        self._slow.pop(watcher, None)
        if self._writing.pop(watcher, None) is not None:
            self._admit()

    def ready(self, watchers: Iterable[Writer]) -> None:
        """The feed gave these watchers changes, or ended them."""
        for watcher in watchers:
            if watcher.idle:
                self._enqueue(watcher)
            elif watcher.ended and watcher in self._slow:
                # Ended while its write waits on a client that does not read: end it now.
                self._interrupt(watcher, timed_out=False)
        self._admit()

    @property
    def writing(self) -> int:
        return len(self._writing)

    def _enqueue(self, watcher: Writer) -> None:
        watcher.idle = False
        self._queue.append(watcher)

    def _admit(self) -> None:
        while len(self._writing) < self.max_writing and self._queue:
            watcher = self._queue.popleft()
            turn = watcher.turn
            if turn is None or turn.done():
                continue  # the stream is gone (its call was cancelled)
            self._writing[watcher] = time.monotonic()
            turn.set_result(None)
        if (self._writing or self._slow) and self._checking is None:
            loop = asyncio.get_running_loop()
            self._checking = loop.call_later(self.max_turn_s, self._check_turns)

    def _check_turns(self) -> None:
        """Take the turn back from streams whose writes wait on their client; end the ones
        the feed ended meanwhile, and the ones whose write has waited `write_timeout_s`."""
        self._checking = None
        now = time.monotonic()
        for watcher, began in list(self._writing.items()):
            if began <= now - self.max_turn_s:
                del self._writing[watcher]
                self._slow[watcher] = began
        for watcher in list(self._slow):
            since = watcher.writing_since
            if watcher.ended:
                self._interrupt(watcher, timed_out=False)
            elif since is not None and since <= now - self.write_timeout_s:
                self._interrupt(watcher, timed_out=True)
        self._admit()

    def _interrupt(self, watcher: Writer, *, timed_out: bool) -> None:
        """Interrupt the stream's waiting write; it then ends with the status that says why.
        Between two writes it is not interrupted: it sees `ended` itself."""
        if watcher.writing_since is None or watcher.task is None:
            return
        del self._slow[watcher]
        watcher.cancelled_to_end = True
        watcher.timed_out = timed_out
        watcher.task.cancel()
