"""The loop probe, as CoreDNS's *loop* plugin sends and counts it.

A probe is a ``HINFO`` query for ``<random>.<random>.ZONE`` (ZONE: the server
block's first zone) that the server sends to itself. It goes through the whole
chain once; if the chain sends it out and it comes back (a *forward* upstream
that forwards to us), it is seen again: a third sighting is a loop. A probe is
*armed* only until it is answered (any reply) or 30 seconds have passed,
CoreDNS's window; after that its name is an ordinary name, so replaying it
later, by accident or on purpose, cannot stop the server.

Nothing here touches a socket: ``Probe.watch`` is given a function that sends
the probe once and says whether a reply came.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable

import dns.exception
import dns.message
import dns.name
import dns.rdatatype
import trio

WINDOW = 30.0
"""A probe is armed this long at most (CoreDNS's 30 s)."""
RETRY = 1.0
"""Wait between sends of a probe that got no reply (CoreDNS's 1 s)."""
EXCHANGE_TIMEOUT = 2.0
"""How long one send waits for the reply (CoreDNS's client default, 2 s)."""
LOOP_AFTER = 2
"""A probe seen more often than this (sent once, back twice) is a loop: CoreDNS's rule."""
TROUBLESHOOTING = "https://coredns.io/plugins/loop#troubleshooting"


def probe_name(zone: str) -> str | None:
    """A new probe name under ``zone``: two random 62-bit numbers; None when too long."""
    name = f"{secrets.randbits(62)}.{secrets.randbits(62)}.{'' if zone == '.' else zone}"
    try:
        dns.name.from_text(name)
    except dns.exception.DNSException:
        return None
    return name


def probe_query(name: str) -> bytes:
    """The probe as sent: a plain recursive HINFO query without EDNS (a fresh ID)."""
    query = dns.message.make_query(name, dns.rdatatype.HINFO, use_edns=False)
    return query.to_wire()


class Probe:
    """One block's probe: its name, how often it was seen, and the loop if one was found."""

    def __init__(self, zone: str, name: str | None) -> None:
        self.zone = zone
        self.name = name
        """The probe's name (lowercased FQDN); None when the zone leaves no room for one."""
        self.armed = name is not None
        """True until the probe is answered or its window closes."""
        self.sightings = 0
        """Arrivals of the probe since it was last sent without a reply."""
        self.error: str | None = None
        self.found = trio.Event()

    def seen(self, remote: str, listener: str) -> bool:
        """Count an arrival of the probe; True once it is a loop (logged once by the caller).

        The caller checks first that the query is a ``HINFO`` for the probe's
        name while it is armed.
        """
        self.sightings += 1
        if self.sightings <= LOOP_AFTER:
            return False
        if self.error is None:
            self.error = (
                f"Loop ({remote} -> {listener}) detected for zone "
                f'"{self.zone}", see {TROUBLESHOOTING}. Query: "HINFO {self.name}"'
            )
            self.found.set()
        return True

    async def watch(self, send: Callable[[], Awaitable[bool]]) -> None:
        """Send the probe until it is answered or its window closes, then disarm it.

        A send that got no reply starts the count anew (CoreDNS's reset):
        sightings of an earlier copy are not held against the next one.
        """
        with trio.move_on_after(WINDOW):
            while not await send():
                self.sightings = 0
                await trio.sleep(RETRY)
        self.armed = False
