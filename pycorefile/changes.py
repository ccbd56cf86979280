"""Announcing changed local data, so that whatever remembers answers forgets them in time.

A plugin that answers from data it loads (meshhosts' table, a hosts file, a
zone file, a Kubernetes watch) *announces* each change it puts into service,
naming what it affects; a plugin that remembers answers (cache, autopath's
stored searches, any memo) checks what it remembers against the announcements
before answering from it. One ``DataChanges`` serves a whole configuration:
``SetupContext.data_changes`` gives it to every plugin, and a Corefile reload
starts a new one along with new plugins.

The contract:

- The announcing plugin calls ``announce`` on the event loop, in the same
  synchronous step as it puts the new data into service (no ``await``
  between the swap and the announcement). From then on, every remembered
  answer for an affected name is outdated: the very next query for it is
  answered from the new data.
- ``names`` are the lowercased FQDNs (``Request.name``'s form, ``newsvc.``)
  whose answers, of any type, may have changed, including names that now
  exist or no longer do (a name some other source, such as the upstream, had
  answered before the local data claimed it) and the empty non-terminals
  above them; ``below`` are names at and under which every answer may have
  changed (a wildcard's parent, a reloaded zone; ``.`` for everything).
  Announcing too much costs only cache misses; announcing too little serves
  stale answers. A load that changes nothing announces nothing.
- A rememberer stamps what it stores with ``generation`` as it was when it
  *asked* (before any wait: a change that comes while the question is
  under way is then still seen), and on a hit compares the stamp with
  ``generation``: equal, the answer is current (one integer comparison, the
  whole cost on the hot path). Otherwise ``affects(name, stamp)`` says
  whether it is outdated; when it is not, the rememberer may move the stamp
  to the current generation so that the next hit is cheap again.
- ``subscribe`` is for a rememberer that would rather forget at once (a small
  memo that simply clears itself): its listener is called with each
  ``DataChange`` inside ``announce``; it must be quick and must not wait.

The log of announcements is bounded; a stamp older than what it still holds
counts as outdated (a miss, never a stale answer).
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["DataChange", "DataChanges"]

log = logging.getLogger("pycorefile")

MAX_LOGGED_CHANGES = 256
"""Announcements remembered for ``affects``; an older stamp counts as outdated."""
MAX_LOGGED_NAMES = 100_000
"""Names remembered over all logged announcements (the oldest go first); one
announcement of more names than this is logged as a change of everything."""

EVERYTHING = frozenset((".",))


@dataclass(frozen=True, slots=True)
class DataChange:
    """One announcement: what a change of local data affects."""

    generation: int
    """``DataChanges.generation`` once this change was announced."""
    names: frozenset[str]
    """Lowercased FQDNs whose answers (any type) may have changed."""
    below: frozenset[str]
    """Lowercased FQDNs at and under which every answer may have changed (``.``: all)."""
    source: str = ""
    """The plugin that announced it (for logs)."""

    def affects(self, name: str) -> bool:
        """True when this change may have changed the answers for ``name`` (lowercased FQDN)."""
        if name in self.names:
            return True
        below = self.below
        if not below:
            return False
        while True:
            if name in below:
                return True
            if name == ".":
                return False
            name = name.partition(".")[2] or "."


Listener = Callable[[DataChange], None]


class DataChanges:
    """The announcements of one configuration: a generation counter and a bounded log."""

    __slots__ = ("_listeners", "_log", "_logged_names", "_oldest_known", "generation")

    def __init__(self) -> None:
        self.generation = 0
        """Bumped by every announcement; compare a stamp with it on each hit."""
        self._log: deque[DataChange] = deque()
        self._logged_names = 0
        self._oldest_known = 0
        """Every announcement after this generation is still in the log."""
        self._listeners: list[Listener] = []

    def announce(
        self, names: Iterable[str] = (), *, below: Iterable[str] = (), source: str = ""
    ) -> DataChange | None:
        """Announce a change that was just put into service; None when it names nothing.

        Call on the event loop, right as the new data starts answering. Pass
        frozensets to have them kept as they are (build them off the event
        loop for a big change).
        """
        names = names if isinstance(names, frozenset) else frozenset(names)
        below = below if isinstance(below, frozenset) else frozenset(below)
        if not names and not below:
            return None
        if len(names) > MAX_LOGGED_NAMES:
            names, below = frozenset(), EVERYTHING
        self.generation += 1
        change = DataChange(self.generation, names, below, source)
        self._log.append(change)
        self._logged_names += len(names)
        while len(self._log) > MAX_LOGGED_CHANGES or self._logged_names > MAX_LOGGED_NAMES:
            dropped = self._log.popleft()
            self._logged_names -= len(dropped.names)
            self._oldest_known = dropped.generation
        for listener in self._listeners:
            try:
                listener(change)
            except Exception:
                log.exception("a listener of data changes failed on %s's change", source or "?")
        return change

    def affects(self, name: str, since: int) -> bool:
        """True when an announcement after generation ``since`` may have changed ``name``.

        ``name`` is a lowercased FQDN. True as well when ``since`` is older
        than the bounded log reaches back.
        """
        if since >= self.generation:
            return False
        if since < self._oldest_known:
            return True
        for change in reversed(self._log):
            if change.generation <= since:
                return False
            if change.affects(name):
                return True
        return False

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` with every later announcement (quick, on the event loop)."""
        self._listeners.append(listener)
