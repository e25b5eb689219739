"""Did every watcher receive every change of the orders it watches, exactly once?

A change is one version of one order: versions count 1, 2, ... with no gap (1 is the
creation), so an order's changes are its versions 1..newest, where newest is the highest
version anyone saw: CreateOrder's answer, the load generator's own stream over all orders,
or any of the watchers. Every stream that watches the order's user, or all orders, must
receive each of those changes once:

- missed: a (stream, change) that never arrived;
- duplicated: every arrival of a (stream, change) after its first;
- misrouted: an arrival on a stream that does not watch that order's user.

Only the orders of the phase's load are accounted (`Truth`); changes of other orders (made
before the phase, or by other clients) are left out.
"""

from __future__ import annotations

from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

#: What a stream over every order watches (WatchOrdersRequest.user_id 0: any user).
ALL_USERS = 0

#: One change: (order id, version).
Change = tuple[str, int]
#: Missed (stream, change) pairs named in the outcome.
MISSED_EXAMPLES = 5


@dataclass
class Truth:
    """The orders of one phase's load: order id -> (user id, newest version seen)."""

    orders: dict[str, tuple[int, int]] = field(default_factory=dict)

    def note(self, order_id: str, user_id: int, version: int) -> None:
        """One sighting of an order: its version counts if it is the newest so far."""
        known = self.orders.get(order_id)
        if known is None or version > known[1]:
            self.orders[order_id] = (user_id, version)


@dataclass
class Receipts:
    """What a set of streams received: per change, how often each stream got it."""

    streams: int
    counts: dict[Change, array[int]] = field(default_factory=dict)

    def add(self, stream: int, order_id: str, version: int) -> None:
        key = (order_id, version)
        row = self.counts.get(key)
        if row is None:
            row = self.counts[key] = array("I", bytes(4 * self.streams))
        row[stream] += 1

    def received(self, order_ids: Iterable[str]) -> int:
        """Arrivals, on every stream, of any change of `order_ids`."""
        wanted = set(order_ids)
        return sum(sum(row) for (order_id, _), row in self.counts.items() if order_id in wanted)


@dataclass(frozen=True)
class Accounting:
    """The outcome: what should have arrived, what did, and what was wrong."""

    orders: int
    changes: int
    #: (stream, change) pairs that should have arrived.
    expected: int
    #: Arrivals of the accounted orders' changes, duplicates included.
    delivered: int
    missed: int
    duplicated: int
    misrouted: int
    #: The first few missed (stream, order id, version), to look them up in the logs.
    missed_examples: list[tuple[int, str, int]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def newest_versions(truth: Mapping[str, tuple[int, int]], receipts: Receipts) -> dict[str, int]:
    """Each accounted order's newest version: the truth's, or a higher one a stream got."""
    newest = {order_id: version for order_id, (_, version) in truth.items()}
    for order_id, version in receipts.counts:
        if order_id in newest and version > newest[order_id]:
            newest[order_id] = version
    return newest


def watchers_by_user(watching: Sequence[int]) -> tuple[dict[int, list[int]], list[int]]:
    """(user id -> indexes of the streams watching that user, indexes watching every order)."""
    by_user: dict[int, list[int]] = {}
    everyone: list[int] = []
    for index, user_id in enumerate(watching):
        if user_id == ALL_USERS:
            everyone.append(index)
        else:
            by_user.setdefault(user_id, []).append(index)
    return by_user, everyone


def expected_deliveries(
    truth: Mapping[str, tuple[int, int]], watching: Sequence[int], receipts: Receipts
) -> int:
    """How many (stream, change) pairs should arrive, as far as is known now."""
    by_user, everyone = watchers_by_user(watching)
    newest = newest_versions(truth, receipts)
    return sum(
        newest[order_id] * (len(by_user.get(user_id, ())) + len(everyone))
        for order_id, (user_id, _) in truth.items()
    )


def account(
    truth: Mapping[str, tuple[int, int]], watching: Sequence[int], receipts: Receipts
) -> Accounting:
    """Compare what each stream received with the changes of the orders it watches.

    `truth`: order id -> (user id, newest version known besides the streams); `watching`:
    stream index -> the user it watches (ALL_USERS: every order).
    """
    by_user, everyone = watchers_by_user(watching)
    newest = newest_versions(truth, receipts)
    expected = delivered = missed = duplicated = misrouted = changes = 0
    examples: list[tuple[int, str, int]] = []
    for order_id, (user_id, _) in truth.items():
        streams = by_user.get(user_id, []) + everyone
        for version in range(1, newest[order_id] + 1):
            changes += 1
            expected += len(streams)
            row = receipts.counts.get((order_id, version))
            if row is None:
                missed += len(streams)
                examples += [(s, order_id, version) for s in streams[:MISSED_EXAMPLES]]
                continue
            arrived = 0
            for stream in streams:
                count = row[stream]
                arrived += count
                if count == 0:
                    missed += 1
                    examples.append((stream, order_id, version))
                elif count > 1:
                    duplicated += count - 1
            delivered += arrived
            misrouted += sum(row) - arrived
    return Accounting(
        orders=len(truth),
        changes=changes,
        expected=expected,
        delivered=delivered + misrouted,
        missed=missed,
        duplicated=duplicated,
        misrouted=misrouted,
        missed_examples=examples[:MISSED_EXAMPLES],
    )
