"""The live flow's numbers: what went through each lane of the saga over the last minute.

At 200 orders/s a browser cannot draw every order, so the console counts on the server:
each order change from WatchOrders lands in a one-second bucket (created, completed, failed
by reason), each look at the replicas' status adds a sample of every saga topic's end and
committed offsets (summed over its partitions), and once a second `summary()` folds the
buckets and samples of the window into one small dict, pushed to every open flow page. The
cost per order change is a counter increment; the cost per push does not grow with the rate.

The lanes follow one order: the Order service creates it (`orders`), the Payment service
decides and records the payment (`payments`, `transactions`), and the Order service ends it.
"""

from __future__ import annotations

from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any

#: Seconds the flow looks back.
WINDOW_S = 60
#: The saga's topics in the order an order crosses them.
TOPICS = ("orders", "payments", "transactions")
#: Failure reasons told apart (the rest are counted under "other reasons").
MAX_REASONS = 12
#: Looks at the topics drawn per lane (one per status poll).
SAMPLES_SHOWN = 30
#: Recent failures shown by name, newest first.
RECENT_FAILURES = 8


@dataclass
class _Second:
    """What WatchOrders reported during one second."""

    second: int
    created: int = 0
    completed: int = 0
    failed: int = 0
    reasons: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class TopicSample:
    """One topic's offsets at one moment, summed over its partitions."""

    end: int
    committed: int


@dataclass(frozen=True)
class Failure:
    order_id: str
    reason: str
    at: float


def reason_kind(reason: str) -> str:
    """ "insufficient balance: 50.00 < 1000.00" -> "insufficient balance": the kind, without
    the amounts, so that failures of one kind count together."""
    kind = reason.split(":", 1)[0].strip()
    return kind[:80] or "(no reason given)"


class FlowWindow:
    """Counts per lane and per outcome over the last WINDOW_S seconds. Not thread-safe:
    the hub holds a lock around it."""

    def __init__(self, window_s: int = WINDOW_S) -> None:
        self.window_s = window_s
        self._seconds: dict[int, _Second] = {}
        self._samples: deque[tuple[float, dict[str, TopicSample]]] = deque()
        self._dead_letters: dict[str, int] = {}
        self._failures: deque[Failure] = deque(maxlen=RECENT_FAILURES)
        self._started: float | None = None

    # -- what comes in -------------------------------------------------------------------

    def _bucket(self, now: float) -> _Second:
        second = int(now)
        if self._started is None:
            self._started = now
        bucket = self._seconds.get(second)
        if bucket is None:
            bucket = self._seconds[second] = _Second(second)
            self._forget(now)
        return bucket

    def _forget(self, now: float) -> None:
        oldest = int(now) - self.window_s
        for second in [s for s in self._seconds if s <= oldest]:
            del self._seconds[second]
        while len(self._samples) > 1 and self._samples[1][0] <= now - self.window_s:
            self._samples.popleft()

    def order_created(self, now: float) -> None:
        self._bucket(now).created += 1

    def order_completed(self, now: float) -> None:
        self._bucket(now).completed += 1

    def order_failed(self, order_id: str, reason: str, now: float) -> None:
        bucket = self._bucket(now)
        bucket.failed += 1
        kind = reason_kind(reason)
        if kind in bucket.reasons or len(bucket.reasons) < MAX_REASONS:
            bucket.reasons[kind] += 1
        else:
            bucket.reasons["other reasons"] += 1
        self._failures.appendleft(Failure(order_id, reason, now))

    def topics_seen(
        self, samples: dict[str, TopicSample], dead_letters: dict[str, int], now: float
    ) -> None:
        """A look at the topics' offsets (from GetStatus) and the dead letters per topic."""
        if self._started is None:
            self._started = now
        self._samples.append((now, samples))
        self._dead_letters = dict(dead_letters)
        self._forget(now)

    # -- what goes out -------------------------------------------------------------------

    def _series(self, now: float, attribute: str) -> list[int]:
        """Per second over the window, oldest first."""
        last = int(now)
        seconds = range(last - self.window_s + 1, last + 1)
        return [getattr(self._seconds[s], attribute) if s in self._seconds else 0 for s in seconds]

    def _topic_lane(self, topic: str) -> dict[str, Any]:
        seen = [(t, s[topic]) for t, s in self._samples if topic in s]
        lane: dict[str, Any] = {"id": topic, "kind": "topic", "name": topic}
        if not seen:
            return {
                **lane,
                "known": False,
                "count": 0,
                "consumed": 0,
                "waiting": 0,
                "series": [],
                "rate": 0.0,
                "dead_letters": self._dead_letters.get(topic, 0),
            }
        (first_t, first), (last_t, last) = seen[0], seen[-1]
        steps = [max(0, b.end - a.end) for (_, a), (_, b) in zip(seen, seen[1:], strict=False)]
        series = [0] * max(0, SAMPLES_SHOWN - len(steps)) + steps[-SAMPLES_SHOWN:]
        span = last_t - first_t
        recent = [(t, s) for t, s in seen if t >= last_t - 5.0]
        rate = (
            (recent[-1][1].end - recent[0][1].end) / (recent[-1][0] - recent[0][0])
            if len(recent) > 1 and recent[-1][0] > recent[0][0]
            else 0.0
        )
        return {
            **lane,
            "known": True,
            "count": max(0, last.end - first.end),
            "consumed": max(0, last.committed - first.committed),
            "waiting": max(0, last.end - last.committed),
            "series": series,
            "rate": round(max(0.0, rate), 1),
            "span_s": round(span, 1),
            "dead_letters": self._dead_letters.get(topic, 0),
        }

    def summary(self, now: float) -> dict[str, Any]:
        """The window as the flow page draws it (JSON-ready)."""
        self._forget(now)
        created = self._series(now, "created")
        completed = self._series(now, "completed")
        failed = self._series(now, "failed")
        reasons: Counter[str] = Counter()
        for bucket in self._seconds.values():
            reasons.update(bucket.reasons)
        covered = 0.0 if self._started is None else min(float(self.window_s), now - self._started)

        def rate(series: list[int]) -> float:
            return round(sum(series[-5:]) / 5.0, 1)

        topics = {topic: self._topic_lane(topic) for topic in TOPICS}
        payment = dict(topics["payments"])
        payment.update(
            id="payment",
            kind="service",
            name="Payment service",
            what="payments decided",
            dead_letters=0,
            waiting=0,
        )
        lanes = [
            {
                "id": "order-created",
                "kind": "service",
                "name": "Order service",
                "what": "orders created",
                "known": True,
                "count": sum(created),
                "series": created,
                "rate": rate(created),
            },
            {**topics["orders"], "what": "records in / consumed"},
            payment,
            {**topics["payments"], "what": "records in / consumed"},
            {**topics["transactions"], "what": "records in / consumed"},
            {
                "id": "order-ended",
                "kind": "service",
                "name": "Order service",
                "what": "orders ended",
                "known": True,
                "count": sum(completed) + sum(failed),
                "series": [c + f for c, f in zip(completed, failed, strict=True)],
                "rate": round(rate(completed) + rate(failed), 1),
            },
        ]
        return {
            "window_s": round(covered),
            "lanes": lanes,
            "outcomes": {
                "created": sum(created),
                "completed": sum(completed),
                "failed": sum(failed),
                "completed_series": completed,
                "failed_series": failed,
            },
            "reasons": [{"reason": r, "count": n} for r, n in reasons.most_common()],
            "recent_failures": [
                {"order_id": f.order_id, "reason": f.reason, "ago_s": round(now - f.at, 1)}
                for f in self._failures
                if now - f.at <= self.window_s
            ],
            "dead_letters": sum(self._dead_letters.values()),
        }
