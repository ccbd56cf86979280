"""Stored replies and the bounded stores that hold them."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from pycorefile.wire import PreparedReply

from ._classify import Category

SECOND_CHANCES = 8
"""How many recently hit entries an eviction may pass over before taking one."""


class Entry:
    """One stored reply: its prepared bytes, when it was stored, how long it lives.

    ``view`` is the prepared reply with TTLs lowered by ``view_age`` seconds.
    It is rebuilt at most once a second per entry (so a hit is a dictionary
    lookup plus a byte join) from the previous view: ages only grow, and a TTL
    that reached 0 stays 0, so the stored original need not be kept (one
    prepared reply per entry, not two).
    """

    __slots__ = (
        "category", "duration", "expires", "generation", "hits", "last_hit", "recheck_at",
        "refreshing", "stale_view", "stored", "used", "view", "view_age",
    )  # fmt: skip

    def __init__(
        self,
        wire: bytes,
        category: Category,
        stored: float,
        duration: float,
        offsets: Sequence[int] | None = None,
        generation: int = 0,
    ) -> None:
        self.view = PreparedReply(wire, offsets)
        self.view_age = 0
        self.category = category
        self.stored = stored
        self.duration = duration
        self.expires = stored + duration
        self.stale_view: PreparedReply | None = None
        self.used = False
        """Hit since it was stored or last passed over by an eviction (second chance)."""
        self.hits = 0
        self.last_hit = stored
        self.refreshing = False
        self.recheck_at = 0.0
        """Until when a failed refresh is not tried again (``serve_stale`` FAILURE_RECHECK)."""
        self.generation = generation
        """The data-changes generation when the reply was asked for (``pycorefile.changes``):
        a hit with another generation first checks that no change since affects the name."""

    def aged(self, age: int) -> PreparedReply:
        """The reply with every TTL lowered by ``age`` seconds (remembered for reuse)."""
        if age > self.view_age:
            self.view = self.view.aged(age - self.view_age)
            self.view_age = age
        return self.view

    def stale(self, ttl: int) -> PreparedReply:
        """The reply with every TTL set to ``ttl``, for answers past expiry."""
        view = self.stale_view
        if view is None:
            view = self.stale_view = self.view.with_ttl(ttl)
        return view

    @property
    def serves_stale(self) -> bool:
        """False for a stored SERVFAIL: RFC 8767 serves stale data, not stale failures."""
        return self.category is not Category.SERVFAIL

    def remaining(self, now: float) -> int:
        """Whole seconds of life left, CoreDNS-style (negative once expired)."""
        return int(self.duration) - int(now - self.stored)


class Shelf:
    """The entries of one kind (success or denial), at most ``capacity`` of them.

    When full, the entry stored longest ago goes, unless it was hit since it
    was stored: then it is moved to the back and loses that mark (a "second
    chance", an approximation of least-recently-used that costs the hit path
    one attribute store).
    """

    __slots__ = ("capacity", "entries", "evictions", "get")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.entries: OrderedDict[bytes, Entry] = OrderedDict()
        self.get = self.entries.get
        self.evictions = 0

    def __len__(self) -> int:
        return len(self.entries)

    def put(self, key: bytes, entry: Entry) -> None:
        entries = self.entries
        if key in entries:
            del entries[key]
        elif len(entries) >= self.capacity:
            self._evict()
        entries[key] = entry

    def remove(self, key: bytes) -> None:
        self.entries.pop(key, None)

    def _evict(self) -> None:
        entries = self.entries
        for _ in range(SECOND_CHANCES):
            key, entry = next(iter(entries.items()))
            if not entry.used:
                break
            entry.used = False
            entries.move_to_end(key)
        entries.popitem(last=False)
        self.evictions += 1
