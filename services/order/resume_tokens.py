"""Resume tokens of WatchOrders streams: a place in `order-updates`, portable between replicas.

A change's place in the topic (partition, offset) is the same on every Order replica, so
a token (the stream's next offset in each partition) issued by one replica resumes on
another. A token is opaque to clients: base64url of a small JSON object.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field

#: The initial-metadata key of a stream's starting token (see WatchStream.subscription_token).
RESUME_TOKEN_KEY = "paysaga-resume-token"

#: A stream's place in `order-updates`: partition -> the next offset it has not seen.
Position = dict[int, int]


class BadResumeToken(ValueError):
    """A resume token that is not one this service issued."""


class ResumeTokenTooOld(LookupError):
    """A resume token from before the oldest change this server still holds."""


@dataclass
class ResumeToken:
    """Where a stream stands: its position, and the order versions the client already has.

    `versions` holds, for a watch of one order, the last version sent; for other watches,
    the orders sent as initial state whose change may still come on the topic (so it is
    not sent twice). Opaque to clients: base64url of a small JSON object.
    """

    position: Position
    versions: dict[str, int] = field(default_factory=dict)
    #: Issued while the initial state was still being sent: a resume sends the rest of it.
    initial: bool = False

    def encode(self) -> str:
        data: dict[str, object] = {
            "p": {str(p): o for p, o in self.position.items()},
            "v": self.versions,
        }
        if self.initial:
            data["i"] = 1
        raw = json.dumps(data, separators=(",", ":")).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> ResumeToken:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            data = json.loads(raw)
            position = {int(p): int(o) for p, o in data["p"].items()}
            versions = {str(i): int(v) for i, v in data.get("v", {}).items()}
            initial = bool(data.get("i", 0))
        except (binascii.Error, ValueError, TypeError, KeyError, AttributeError) as exc:
            raise BadResumeToken(
                "resume_token is not a token this service issued: pass the resume_token of "
                "a WatchOrdersResponse unchanged, or watch without one"
            ) from exc
        if any(o < 0 for o in position.values()) or any(p < 0 for p in position):
            raise BadResumeToken("resume_token holds a negative offset: it was altered")
        return cls(position, versions, initial)
