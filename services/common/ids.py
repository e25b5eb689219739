"""Row and event ids: UUIDs whose first 48 bits are the time they were made (UUIDv7).

Every id the services make is a key of some index: an order's id keys `orders`, its
deadline, its journal rows and the Payment service's `payment` rows; an event's id keys
the consumer's inbox and the outbox's index. A random UUID (version 4) lands each new
key on a random page of those indexes, so a commit of N orders writes about N pages of
each, and a log page and a later checkpoint copy for every one. Ids that begin with the
time land side by side, at the index's recent end, so a commit writes a few pages per
index whatever N is, and those pages stay in the cache.

The format is RFC 9562's version 7: 48 bits of Unix milliseconds, the version, 74
random bits (`os.urandom`) and the variant. Ids made in one millisecond are not ordered
among themselves; nothing here needs them to be. An id still parses as any UUID. It
reveals the millisecond it was made to whoever sees it (an order's is its `create_time`,
which its owner reads anyway); nothing authorizes by knowing an id. Show an id shortened
by its random end (`id[-8:]`): ids made within about a minute (65.5 s) share their first
8 characters.
"""

from __future__ import annotations

import os
import time

_VERSION_7 = 0x7 << 76
_VARIANT_RFC = 0b10 << 62
_RAND_A_SHIFT = 64
_RAND_B_BITS = 62


def time_ordered_uuid() -> str:
    """A new UUIDv7, in the usual 8-4-4-4-12 hex form."""
    return uuid7_text(time.time_ns() // 1_000_000, os.urandom(10))


def uuid7_text(millis: int, random_bytes: bytes) -> str:
    """The UUIDv7 of a Unix millisecond and 10 random bytes (of which 74 bits are used)."""
    rand = int.from_bytes(random_bytes, "big")  # 80 bits: the top 12 for rand_a, the low 62 rand_b
    value = (
        (millis & 0xFFFF_FFFF_FFFF) << 80
        | _VERSION_7
        | (rand >> 68) << _RAND_A_SHIFT
        | _VARIANT_RFC
        | rand & ((1 << _RAND_B_BITS) - 1)
    )
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"
