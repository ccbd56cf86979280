"""Forwarding-loop detection, as CoreDNS's *loop* plugin does it.

A probe is a ``HINFO`` query for ``<random>.<random>.ZONE``. It is sent
through an upstream; if the same name then reaches this server's *forward*
twice, the upstream sends our queries back to us: a loop. A probe is *armed*
only until it is answered (any reply) or 30 seconds have passed, CoreDNS's
window; after that its name is an ordinary name, so replaying it later, by
accident or on purpose, cannot stop the server.

Nothing here knows about upstreams: the caller gives ``watch`` a function
that sends the probe once and says whether a reply came. (CoreDNS's *loop*
plugin sends it to the server itself; ours goes through each upstream.)
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

from pycorefile import Request

log = logging.getLogger("pycorefile")

WINDOW = 30.0
"""A probe is armed this long at most (CoreDNS's 30 s)."""
RETRY = 1.0
"""Wait between sends of a probe that got no reply (CoreDNS's 1 s)."""
SIGHTINGS = 3
"""A probe seen this often (sent once, back twice) is a loop: CoreDNS's rule."""
MAX_NAME = 250


@dataclass
class Probe:
    """An armed probe: its name, where it went, and how often it was seen."""

    name: str
    zone: str
    upstream: str
    until: float
    """When it is disarmed at the latest (a trio time)."""
    sightings: int = 1
    """1 when sent; each arrival at this server adds one."""


class LoopDetector:
    """The armed probes of one configuration, and the loop if one was found."""

    def __init__(self) -> None:
        self.armed: dict[str, Probe] = {}
        """Probe names (lowercased FQDN) still armed; empty once all are disarmed."""
        self.error: str | None = None
        self.found = trio.Event()

    def arm(self, zone: str, upstream: str) -> Probe | None:
        """A new probe for ``zone`` through ``upstream``; None when the name would be too long."""
        name = f"{random.getrandbits(62)}.{random.getrandbits(62)}.{'' if zone == '.' else zone}"
        if len(name) > MAX_NAME:
            return None
        probe = self.armed[name] = Probe(name, zone, upstream, trio.current_time() + WINDOW)
        return probe

    def looped(self, request: Request) -> bool:
        """Count an armed probe arriving here; True (answer SERVFAIL) once it is a loop.

        The caller checks first that the query is a ``HINFO`` for an armed
        name (``request.name in detector.armed``).
        """
        probe = self.armed[request.name]
        probe.sightings += 1
        if probe.sightings < SIGHTINGS:
            return False
        if self.error is None:
            local = request.local
            where = f"{local[0]}:{local[1]}" if local else "this server"
            self.error = (
                f"Loop ({request.client[0]}:{request.client[1]} -> {where}) detected for zone "
                f'"{probe.zone}" through upstream {probe.upstream}: it sends our queries back '
                f'to us. Query: "HINFO {probe.name}". Point forward at a name server that does '
                f"not forward to this one."
            )
            log.error("plugin/forward: %s", self.error)
            self.found.set()
        return True

    async def watch(self, probe: Probe, send: Callable[[], Awaitable[bool]]) -> None:
        """Send ``probe`` until it is answered or its window closes, then disarm it.

        A send that got no reply starts the count anew (CoreDNS's reset):
        sightings of an earlier copy are not held against the next one. When
        cancelled first, the probe stays armed: ``watch`` it again to go on.
        """
        with trio.move_on_at(probe.until):
            while not await send():
                probe.sightings = 1
                await trio.sleep(RETRY)
        self.armed.pop(probe.name, None)
