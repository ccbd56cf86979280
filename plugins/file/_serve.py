"""Serving a set of zones: routing a question to its zone, replies as wire bytes, reloads.

``ZoneSet`` is what *file* and *auto* share (one implementation): the zones
by origin, the prepared replies already given, the answer to a request, and
the reload of one zone from its file (serial compared, the last good zone
kept on any error). The plugins only decide which zones exist and when to
look at the files.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import trio

from pycorefile import Handler, PluginError, Reply, Request, Result, then
from pycorefile.files import Stamps, file_stamps
from pycorefile.plugin import Fallthrough
from pycorefile.plugin import lookup as ask_server
from pycorefile.wire import PreparedReply
from pycorefile.zones import match_zone

from ._zone import Answer, Zone, ZoneFileError, joined, load_zone, lookup
from ._zone import Result as Found

log = logging.getLogger("pycorefile")

MEMO_MAX = 10_000
"""Prepared replies kept per zone set; all are dropped when full, and on every zone change."""

_TRANSFERS = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)

Stamp = Stamps | None
"""A zone file's ``pycorefile.files.file_stamps``; None before it was first seen."""


@dataclass
class ZoneSource:
    """Where a zone comes from and what was seen of its file the last time."""

    origin: str
    path: str
    stamp: Stamp = None


class ZoneSet:
    """The zones a plugin serves, answered from immutable ``Zone`` values swapped on reload.

    A query reads ``zones`` once; a reload replaces one entry (and drops the
    prepared replies) in one step on the event loop, so a query sees the old
    zone or the new one, never a mix.
    """

    def __init__(self, plugin: str, fallthrough: Fallthrough | None = None) -> None:
        self.plugin = plugin
        self.fallthrough = fallthrough
        self.zones: dict[str, Zone | None] = {}
        """Origin → its zone; None while a zone's file has not loaded yet (SERVFAIL)."""
        self.sources: dict[str, ZoneSource] = {}
        self._origins: tuple[str, ...] = ()
        self._memo: dict[bytes, PreparedReply] = {}
        self.on_change: Callable[[str], object] | None = None
        """Told the origin of every zone that changed, appeared or went away."""

    # -- Which zones ---------------------------------------------------------------

    @property
    def origins(self) -> tuple[str, ...]:
        return self._origins

    def install(self, origin: str, zone: Zone | None, path: str = "", stamp: Stamp = None) -> None:
        """Serve ``zone`` for ``origin`` (replacing any before it); forget prepared replies."""
        self.zones[origin] = zone
        source = self.sources.get(origin)
        if source is None:
            self.sources[origin] = ZoneSource(origin, path or (zone.file if zone else ""), stamp)
        else:
            if path:
                source.path = path
            source.stamp = stamp
        self._origins = tuple(self.zones)
        self._changed(origin)

    def remove(self, origin: str) -> None:
        self.zones.pop(origin, None)
        self.sources.pop(origin, None)
        self._origins = tuple(self.zones)
        self._changed(origin)

    def _changed(self, origin: str) -> None:
        self._memo = {}
        # The one place a zone change is told to whoever keeps answers derived from it
        # (caches, autopath): the plugins announce it as a change of the whole zone.
        if self.on_change is not None:
            self.on_change(origin)

    # -- Answering -----------------------------------------------------------------

    def known(self, wire: bytes, key: bytes, name_end: int, edns: bool, do: bool) -> bytes | None:
        """A reply given before for this question (key less its CD bit), or None."""
        found = self._memo.get(key[:-1])
        return None if found is None else found.render(wire, name_end, edns, do)

    def known_reply(self, request: Request) -> bytes | None:
        """``known`` for a request: checked first, before the name is even read as text."""
        found = self._memo.get(request.key[:-1])
        if found is None:
            return None
        return found.render(request.wire, request.name_end, request.edns, request.do)

    def serves(self, name: str) -> str | None:
        """The origin of the zone ``name`` (lowercased FQDN) belongs to, or None."""
        return match_zone(name, self._origins)

    def handle(self, request: Request, next_handler: Handler, origin: str) -> Result:
        """Answer ``request`` from the zone at ``origin`` (``serves`` gave it; ``known_reply``
        had nothing)."""
        memo_key = request.key[:-1]
        zone = self.zones.get(origin)
        if zone is None:
            raise PluginError(
                f"plugin/{self.plugin}: zone {origin} is not loaded", dns.rcode.SERVFAIL
            )
        if request.qtype in _TRANSFERS:
            return request.error(dns.rcode.REFUSED)
        qname = dns.name.from_text(request.name)
        answer = lookup(zone, qname, request.qtype, request.do)
        answer = self._resolve_elsewhere(zone, answer, request.qtype, request.do)
        if answer.external is not None and request.qtype != dns.rdatatype.CNAME:
            # A target outside every zone here: ask the server, as CoreDNS's upstream
            # lookup does; such a reply depends on others' data and is not remembered.
            return then(
                ask_server(request, answer.external),
                lambda reply: self._followed(request, qname, zone, answer, reply),
            )
        if (
            not answer.answer
            and (answer.result is Found.NXDOMAIN or answer.empty_non_terminal)
            and self.fallthrough is not None
            and self.fallthrough.through(request.name)
        ):
            return next_handler.handle(request)
        if answer.result is Found.SERVFAIL and not answer.answer:
            raise PluginError(
                f"plugin/{self.plugin}: {request.name} could not be answered (a CNAME or DNAME "
                "loop, or too many of them)",
                dns.rcode.SERVFAIL,
            )
        prepared = PreparedReply.from_message(reply_message(request, qname, answer))
        if len(self._memo) >= MEMO_MAX:
            self._memo = {}
        self._memo[memo_key] = prepared
        return prepared.render(request.wire, request.name_end, request.edns, request.do)

    def _followed(
        self, request: Request, qname: dns.name.Name, zone: Zone, answer: Answer, reply: Reply
    ) -> bytes:
        """The CNAME chain with the server's answer for its target appended (CoreDNS's
        ``externalLookup``): the target's rcode, the zone's NS in authority."""
        msg = reply if isinstance(reply, dns.message.Message) else dns.message.from_wire(reply)
        rcode = msg.rcode()
        if rcode == dns.rcode.NXDOMAIN:
            result = Found.NXDOMAIN
        elif rcode == dns.rcode.SERVFAIL:
            result = Found.SERVFAIL
        elif rcode == dns.rcode.NOERROR and not msg.answer:
            result = Found.NODATA
        else:
            result = Found.SUCCESS
        followed = Answer(result, [*answer.answer, *msg.answer], zone.apex_ns(request.do))
        prepared = PreparedReply.from_message(reply_message(request, qname, followed))
        return prepared.render(request.wire, request.name_end, request.edns, request.do)

    def _resolve_elsewhere(self, zone: Zone, answer: Answer, qtype: int, do: bool) -> Answer:
        """Follow a CNAME that left the zone into another zone of this set, if it is one.

        A target in none of our zones is left in ``answer.external``: ``handle``
        asks the whole server for it.
        """
        for _ in range(8):
            target = answer.external
            if target is None:
                return answer
            origin = self.serves(target.to_text())
            other = self.zones.get(origin) if origin is not None else None
            if other is None:
                return answer
            answer = joined(zone, answer.answer, lookup(other, target, qtype, do, 1), do)
        return answer

    # -- Reloading -----------------------------------------------------------------

    async def reload(self, origin: str, by_mtime: bool = False) -> bool:
        """Read the zone's file again if it changed; serve it when its SOA serial changed.

        Any failure (unreadable, unparsable) is logged and the zone serving
        stays. ``by_mtime`` swaps on a newer file whatever its serial.
        """
        source = self.sources.get(origin)
        if source is None:
            return False
        current = self.zones.get(origin)
        stamp = await trio.to_thread.run_sync(file_stamps, (source.path,))
        if stamp == source.stamp and current is not None:
            return False
        try:
            zone = await trio.to_thread.run_sync(
                load_zone, source.path, origin, abandon_on_cancel=True
            )
        except ZoneFileError as exc:
            if stamp != source.stamp:
                log.error(
                    "plugin/%s: parsing zone %r: %s; the last good zone keeps serving",
                    self.plugin,
                    origin,
                    exc,
                )
            source.stamp = stamp
            return False
        except Exception:
            source.stamp = stamp
            log.exception("plugin/%s: reading zone %r failed unexpectedly", self.plugin, origin)
            return False
        if current is not None and zone.serial == current.serial and not by_mtime:
            source.stamp = stamp
            log.debug(
                "plugin/%s: zone %r: no change in SOA serial %d", self.plugin, origin, zone.serial
            )
            return False
        if self.sources.get(origin) is not source:
            return False  # removed (auto) while reading
        self.install(origin, zone, source.path, stamp)
        log.info(
            "plugin/%s: Successfully reloaded zone %r in %r with %d SOA serial",
            self.plugin, origin, source.path, zone.serial,
        )  # fmt: skip
        return True


def reply_message(request: Request, qname: dns.name.Name, answer: Answer) -> dns.message.Message:
    """The reply CoreDNS's file writes for ``answer``: AA unless a bare referral; RA never.

    Built without parsing the query: the server adds the client's ID, RD/CD
    bits, question letter case and OPT record when it renders the prepared bytes.
    """
    if answer.result is Found.NXDOMAIN:
        rcode = dns.rcode.NXDOMAIN
    elif answer.result is Found.SERVFAIL:
        rcode = dns.rcode.SERVFAIL
    else:
        rcode = dns.rcode.NOERROR
    msg = dns.message.Message(request.id)
    msg.flags = dns.flags.QR
    if not (answer.result is Found.DELEGATION and not answer.answer):
        msg.flags |= dns.flags.AA
    msg.set_rcode(rcode)
    qtype = dns.rdatatype.RdataType.make(request.qtype)
    msg.question = [dns.rrset.RRset(qname, dns.rdataclass.IN, qtype)]
    msg.answer = list(answer.answer)
    msg.authority = list(answer.authority)
    msg.additional = list(answer.additional)
    return msg
