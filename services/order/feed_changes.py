"""One change of the order feed (services.order.feed): as an object, and as its history
holds it.

A `Change` is one OrderUpdated record as the feed fans it out: the order, the feed's
position right after it (its streams' resume token), and the response serialized once for
every stream. The history holds the same change as a `HeldChange`, one exact tuple of plain
values, which CPython's garbage collector stops tracking (see the feed's docstring);
`Change.from_held` makes it an object again.
"""

from __future__ import annotations

from itertools import chain
from typing import Final

from paysaga.v1 import orders_pb2
from services.order.resume_tokens import Position, ResumeToken


class Change:
    """One OrderUpdated record: the order as it stood right after one change."""

    __slots__ = ("partition", "offset", "order", "after", "_frame", "_frame_one_order")

    def __init__(self, partition: int, offset: int, order: orders_pb2.Order) -> None:
        self.partition = partition
        self.offset = offset
        self.order = order
        #: The feed's position right after this change (set when the feed takes it; never
        #: changed after): the resume token of every stream it is sent to in step.
        self.after: Position = {}
        self._frame: bytes | None = None
        self._frame_one_order: bytes | None = None

    def frame(self) -> bytes:
        """The WatchOrdersResponse of this change for a watch of a user or of every order,
        serialized once for all of them: its token is `after`, with no version pending."""
        frame = self._frame
        if frame is None:
            frame = self._frame = _response(self.order, ResumeToken(self.after))
        return frame

    def frame_for_one_order(self) -> bytes:
        """The same for a watch of this change's order: its token holds the version sent."""
        frame = self._frame_one_order
        if frame is None:
            versions = {self.order.id: self.order.version}
            frame = self._frame_one_order = _response(self.order, ResumeToken(self.after, versions))
        return frame

    def to_held(self) -> HeldChange:
        """This change as the history holds it (once the feed has set `after`)."""
        order = self.order
        return (
            self.partition,
            self.offset,
            order.id,
            order.user_id,
            order.SerializeToString(),
            *chain.from_iterable(self.after.items()),
        )

    @classmethod
    def from_held(cls, held: HeldChange) -> Change:
        """The change `to_held` gave `held` for (an equal order, the same `after`)."""
        order = orders_pb2.Order.FromString(held[ORDER_BYTES])
        change = cls(held[PARTITION], held[OFFSET], order)
        after = held[AFTER:]
        change.after = dict(zip(after[::2], after[1::2], strict=True))
        return change


#: A held change: partition, offset, order id, user id, the order serialized, then the
#: feed's position right after it, flattened (partition, offset, partition, offset, ...).
#: An exact tuple of these (not a NamedTuple: CPython untracks exact tuples only).
HeldChange = tuple[int, int, str, int, bytes, *tuple[int, ...]]
PARTITION: Final = 0
OFFSET: Final = 1
ORDER_ID: Final = 2
USER_ID: Final = 3
ORDER_BYTES: Final = 4
AFTER: Final = 5


def _response(order: orders_pb2.Order, token: ResumeToken) -> bytes:
    response = orders_pb2.WatchOrdersResponse(order=order, resume_token=token.encode())
    return response.SerializeToString()
