"""The autopath handler: do a stub resolver's search on its first query, answer with a CNAME."""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.CNAME
import dns.rrset

from pycorefile import Directive, Pending, Plugin, Reply, Request, Result, SetupContext, then
from pycorefile.plugin import ClientSearchPath
from pycorefile.response import ADDITIONAL, AUTHORITY, records
from pycorefile.wire import (
    PreparedReply,
    WireError,
    extended_errors,
    name_to_text,
    with_edns_options,
)

from ._parse import AutopathConfig, normalize_search, parse_autopath

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("pycorefile.autopath")

SEARCHED_TYPES = frozenset((dns.rdatatype.A, dns.rdatatype.AAAA))
"""The query types autopath searches for: the ones ``getaddrinfo`` asks."""
UNKNOWN_NEGATIVE_TTL = 5
"""Seconds a reply without any TTL (NXDOMAIN or NODATA without an SOA) is trusted."""
MAX_STORED = 10_000
"""Synthesized answers kept at most (the oldest is dropped first)."""

_NXDOMAIN = dns.rcode.NXDOMAIN
_NOERROR = dns.rcode.NOERROR
_TYPE_SOA = 6
_TYPE_OPT = 41
_U32 = struct.Struct(">I")

ClientGate = Callable[[Request, Sequence[str]], bool]
"""A later plugin's ``admits(request, names)``: would this client, asking each of ``names``
with the request's type, be let through (acl)? Stored answers are given only when so."""


def client_gates(plugins: Iterable[Plugin]) -> tuple[ClientGate, ...]:
    """The ``admits`` methods of those of ``plugins`` that have one, in order."""
    gates: list[ClientGate] = []
    for plugin in plugins:
        admits = getattr(plugin, "admits", None)
        if callable(admits):
            gates.append(admits)
    return tuple(gates)


class SearchPath:
    """Search domains ready for matching: lowercased wire forms and dnspython labels."""

    __slots__ = ("domains", "first", "labels")

    def __init__(self, domains: Sequence[str]) -> None:
        self.domains = tuple(domains)
        names = [dns.name.from_text(d) for d in self.domains]
        self.labels = tuple(n.labels for n in names)
        first = names[0].to_wire() if names else None
        self.first: bytes = first or b""
        """The first search domain in wire form (empty when there is no search path)."""

    def candidates(self, base: tuple[bytes, ...]) -> list[dns.name.Name]:
        """What a stub resolver tries for ``base``: each search domain, then ``base`` itself.

        Repeats and names longer than 255 bytes are left out. The first
        candidate is always ``base`` + the first search domain.
        """
        out: list[dns.name.Name] = []
        seen: set[dns.name.Name] = set()
        for labels in (*self.labels, (b"",)):
            try:
                name = dns.name.Name(base + labels)
            except dns.name.NameTooLong:
                continue
            if name not in seen:
                seen.add(name)
                out.append(name)
        return out


def suffix_start(name: bytes, suffix: bytes) -> int:
    """Where ``suffix`` starts in wire name ``name`` when it is a label-aligned tail, else -1."""
    start = len(name) - len(suffix)
    if start < 0 or not name.endswith(suffix):
        return -1
    pos = 0
    while pos < start:
        pos += name[pos] + 1
    return start if pos == start else -1


def wire_labels(name: bytes) -> tuple[bytes, ...]:
    """The labels of an uncompressed wire name that lacks its root byte."""
    labels = []
    pos = 0
    while pos < len(name):
        length = name[pos]
        labels.append(name[pos + 1 : pos + 1 + length])
        pos += length + 1
    return tuple(labels)


def reply_rcode(reply: Reply) -> int:
    """The rcode of a reply, wire or dnspython (-1 for an empty reply: dropped)."""
    if isinstance(reply, dns.message.Message):
        return int(reply.rcode())
    return reply[3] & 0xF if len(reply) >= 4 else -1


def passed_on(request: Request, rcode: int, reply: Reply) -> bytes:
    """A try's failure (or acl-filtered reply) for the name asked: its rcode and its
    Extended DNS Errors, no records.

    As CoreDNS's autopath, which passes that try's reply on under the asked
    name: an acl's REFUSED for a later name keeps its Blocked error.
    """
    out = request.error(rcode)
    if not request.edns:
        return out
    wire = reply.to_wire() if isinstance(reply, dns.message.Message) else reply
    return with_edns_options(out, extended_errors(wire))


def reply_lifetime(reply: Reply) -> int:
    """How long a reply's facts hold: its smallest TTL, an SOA's counting as negative TTL.

    Only the answer and authority sections count. A reply without any record
    (a bare NXDOMAIN or NODATA) gets ``UNKNOWN_NEGATIVE_TTL``; an unreadable
    one gets 0.
    """
    return reply_facts(reply)[0]


def reply_facts(reply: Reply) -> tuple[int, bool]:
    """``reply_lifetime`` and whether the authority section holds an SOA.

    A denial without an SOA is one CoreDNS's cache never keeps (it has no
    negative TTL); an unreadable reply counts as having none.
    """
    if isinstance(reply, dns.message.Message):
        ttls = []
        for rrset in (*reply.answer, *reply.authority):
            ttls.append(rrset.ttl)
            if rrset.rdtype == dns.rdatatype.SOA:
                ttls.extend(rdata.minimum for rdata in rrset)
        soa = any(rrset.rdtype == dns.rdatatype.SOA for rrset in reply.authority)
        return (min(ttls) if ttls else UNKNOWN_NEGATIVE_TTL), soa
    try:
        best = -1
        soa = False
        for in_authority, rtype, ttl in _wire_records(reply):
            if rtype == _TYPE_SOA:
                soa = soa or in_authority
            if best < 0 or ttl < best:
                best = ttl
    except (WireError, struct.error, IndexError):
        return 0, False
    return (UNKNOWN_NEGATIVE_TTL if best < 0 else best), soa


def _wire_records(wire: bytes) -> Iterator[tuple[bool, int, int]]:
    """(in the authority section, type, TTL) of each answer and authority record.

    An SOA's TTL is already lowered to its MINIMUM field (its negative TTL).
    """
    for section, rtype, _rclass, ttl, _name, rdata_at, rdata_end in records(wire):
        if section == ADDITIONAL:
            return
        if rtype == _TYPE_OPT:
            continue
        if rtype == _TYPE_SOA and rdata_end - rdata_at >= 20:
            ttl = min(ttl, _U32.unpack_from(wire, rdata_end - 4)[0])
        yield section == AUTHORITY, rtype, ttl


class _Stored:
    """A synthesized answer kept for its lifetime, its TTLs aged once per second."""

    __slots__ = (
        "age", "current", "expires", "generation", "names", "original", "path", "stored",
        "success",
    )  # fmt: skip

    def __init__(
        self,
        prepared: PreparedReply,
        now: float,
        lifetime: int,
        success: bool,
        names: tuple[str, ...],
        generation: int = 0,
        path: SearchPath | None = None,
    ) -> None:
        self.path = path
        """The search path that found it: given only to a client with that same path."""
        self.generation = generation
        """The data-changes generation when the search began (``pycorefile.changes``)."""
        self.success = success
        """True for a found name (counted as an autopath success), False for NXDOMAIN."""
        self.names = names
        """The names the search asked the rest of the chain (lowercased FQDNs), in order."""
        self.original = prepared
        self.current = prepared
        self.age = 0
        self.stored = now
        self.expires = now + lifetime

    def found_with(self, path: SearchPath) -> bool:
        """True when ``path`` is the search path this answer was found with."""
        found = self.path
        return found is path or (found is not None and found.domains == path.domains)

    def render(self, wire: bytes, name_end: int, edns: bool, do: bool, now: float) -> bytes:
        """The answer for the query ``wire`` at ``now`` (before ``expires``)."""
        age = int(now - self.stored)
        if age != self.age:
            self.current = self.original.aged(age)
            self.age = age
        return self.current.render(wire, name_end, edns, do)


class _Search:
    """One autopath search: the candidates tried in turn, and what their replies decide."""

    __slots__ = (
        "_candidates", "base", "first", "generation", "index", "keep_denial", "lifetime", "path",
        "plugin", "request",
    )  # fmt: skip

    def __init__(
        self, plugin: AutopathPlugin, request: Request, path: SearchPath, base: tuple[bytes, ...]
    ) -> None:
        self.plugin = plugin
        self.generation = plugin.changes.generation
        """The data-changes generation when the search began: its stored answer's stamp."""
        self.request = request
        self.path = path
        self.base = base
        """The labels of the asked name before the first search domain."""
        self._candidates: list[dns.name.Name] | None = None
        self.index = 0
        self.lifetime = 1 << 31
        self.first: Reply = b""
        self.keep_denial = True
        """False when the first try's NXDOMAIN has no SOA: an all-NXDOMAIN end is not kept."""

    @property
    def candidates(self) -> list[dns.name.Name]:
        """The names to try (``SearchPath.candidates``), built only once the first is NXDOMAIN.

        The first is the asked name itself, so a name that exists as asked
        never pays for building the others.
        """
        found = self._candidates
        if found is None:
            found = self._candidates = self.path.candidates(self.base)
        return found

    def asked(self, last: int) -> tuple[str, ...]:
        """The names tried up to candidate ``last`` (lowercased FQDNs); the first is as asked."""
        later = self.candidates[1 : last + 1]
        wires = (name.to_wire() for name in later)
        return (self.request.name, *(name_to_text(w) for w in wires if w is not None))

    def current(self) -> Request:
        """The request for the candidate to try now (the first is the query itself)."""
        index = self.index
        return self.request if index == 0 else self.request.derive(self.candidates[index])

    def feed(self, reply: Reply) -> tuple[Reply, bool] | None:
        """Take the current candidate's reply: None to go on, else (final reply, success)."""
        rcode = reply_rcode(reply)
        index = self.index
        request = self.request
        if index == 0:
            if rcode != _NXDOMAIN:
                # The name as asked answers (or fails): nothing to search.
                return reply, rcode == _NOERROR
            self.first = reply
            # The answer will be autopath's, not that of whoever said NXDOMAIN
            # (nor of one that started waiting for it).
            request.answered_by = self.plugin.name
        if rcode == _NXDOMAIN:
            lifetime, soa = reply_facts(reply)
            if index == 0 and not soa:
                # The answer would be this NXDOMAIN, which CoreDNS's cache (in front
                # of its autopath) never keeps without an SOA: nor is it kept here.
                self.keep_denial = False
            self.lifetime = min(self.lifetime, lifetime)
            self.index = index + 1
            if self.index < len(self.candidates):
                return None
            lifetime = self.lifetime if self.keep_denial else 0
            asked = self.asked(self.index - 1)
            return (
                self.plugin.all_nxdomain(
                    request, self.first, lifetime, asked, self.generation, self.path
                ),
                False,
            )
        if rcode != _NOERROR:
            # SERVFAIL, REFUSED, a drop...: the search cannot be finished here. The
            # client gets the same failure for the name it asked and goes on
            # exactly as it would have without autopath.
            return (reply if rcode < 0 else passed_on(request, rcode, reply)), False
        asked = self.asked(index)
        if not self.plugin.admitted(request, asked):
            # An acl after autopath filtered this try for this client (one that
            # blocks or drops ends the search above): its empty NOERROR is the
            # answer, under the asked name, without a CNAME, as CoreDNS's autopath.
            return passed_on(request, rcode, reply), False
        lifetime = min(self.lifetime, reply_lifetime(reply))
        target = self.candidates[index]
        return (
            self.plugin.synthesize(
                request, target, reply, lifetime, asked, self.generation, self.path
            ),
            True,
        )


class AutopathPlugin(Plugin):
    """Answers the first search-expanded query of a stub resolver with the search's result.

    A query below the first search domain is split into a base name and the
    domain; base + each search domain, then base alone, are asked of the rest
    of the chain (so through the cache, each under its own name) until one is
    not NXDOMAIN. The reply is a CNAME from the name asked to that name plus
    its records, or NODATA with the CNAME, so A and AAAA stop at the same name.
    """

    def __init__(self, config: AutopathConfig, ctx: SetupContext) -> None:
        self.config = config
        self._ctx = ctx
        self.changes = ctx.data_changes
        """Announcements of changed local data: a stored answer they affect is forgotten."""
        self._all_zones = "." in config.zones
        self._zone_wires = tuple(
            w for w in (dns.name.from_text(z).to_wire() for z in config.zones) if w is not None
        )
        self._search = SearchPath(config.search)
        self._source: Callable[[], Iterable[str]] | None = None
        self._client_source: Callable[[Request], Sequence[str] | None] | None = None
        self._client_paths: dict[tuple[str, ...], SearchPath] = {}
        """Search paths given per client (``ClientSearchPath``), made ready once each."""
        self._raw: object = None
        self._raw_copy: tuple[str, ...] = ()
        self._warned: set[str] = set()
        self._stored: dict[bytes, _Stored] = {}
        self._gates: tuple[ClientGate, ...] = ()
        """The later plugins that decide by client (acl), found at startup."""
        self._success: dict[str, int] = {}

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> AutopathPlugin:
        config = parse_autopath(directives, ctx)
        if config.plugin is None and not config.search:
            log.warning(
                "plugin/autopath: %s has no search domains; autopath will do nothing",
                config.source,
            )
        return cls(config, ctx)

    async def startup(self) -> None:
        self._gates = client_gates(self._ctx.plugins_after(self))
        name = self.config.plugin
        if name is None:
            return
        other = self._ctx.plugin(name)
        if other is None:
            raise RuntimeError(f"plugin '{name}' (from {self.config.source}) is not loaded")
        if isinstance(other, ClientSearchPath):
            self._client_source = other.search_path_for
            return
        method = getattr(other, "search_path", None)
        if not callable(method):
            raise RuntimeError(
                f"plugin '{name}' does not supply a search path "
                "(it has no search_path or search_path_for method)"
            )
        self._source = method

    # -- Serving ----------------------------------------------------------------

    def serve_known(
        self, wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
    ) -> bytes | None:
        # The server's fast path: a stored search answer, when neither the
        # search path (kubernetes: the client's namespace) nor a later plugin
        # (acl) depends on the client, is exactly what ``handle`` answers.
        # Anything else (a search to run, an expired answer to drop, an answer
        # to check against changes of local data since its search) takes the chain.
        if self._gates or self._client_source is not None:
            return None
        if self._source is not None:
            self._current_search()  # a changed search path forgets the stored answers
        stored = self._stored.get(key)
        if stored is None or stored.generation != self.changes.generation:
            return None
        now = time.monotonic()
        if now >= stored.expires:
            return None
        return self._give(stored, wire, name_end, edns, do, server, now)

    def handle(self, request: Request) -> Result:
        plan = self._plan(request)
        if plan is None:
            return self.next.handle(request)
        if type(plan) is bytes:
            return plan
        assert isinstance(plan, _Search)
        return self._go_on(plan)

    def _give(
        self, stored: _Stored, wire: bytes, name_end: int, edns: bool, do: bool, server: str,
        now: float,
    ) -> bytes:  # fmt: skip
        """A live stored answer for the query ``wire``, counted as a success when it is one."""
        if stored.success:
            self._success[server] = self._success.get(server, 0) + 1
        return stored.render(wire, name_end, edns, do, now)

    def _go_on(self, search: _Search) -> Result:
        """Ask the rest of the chain for each candidate in turn until a reply decides.

        A candidate answered now is fed to the search at once. One that must
        wait ends this call with the wait; after it, the same search goes on
        from that candidate, so the candidates before it are never asked again
        (they were counted, and maybe answered by the cache, once).
        """
        ask = self.next.handle
        while True:
            result = ask(search.current())
            if isinstance(result, Pending):
                return then(result, lambda reply: self._resume(search, reply))
            done = search.feed(result)
            if done is not None:
                return self._done(search.request, done)

    def _resume(self, search: _Search, reply: Reply) -> Result:
        """A candidate's reply after its wait: decide, or go on with the next candidate."""
        done = search.feed(reply)
        return self._go_on(search) if done is None else self._done(search.request, done)

    def _done(self, request: Request, done: tuple[Reply, bool]) -> Reply:
        reply, success = done
        if success:
            server = request.server
            self._success[server] = self._success.get(server, 0) + 1
        return reply

    def _plan(self, request: Request) -> _Search | bytes | None:
        """None to pass the query on, a stored answer, or the search to run."""
        if request.qtype not in SEARCHED_TYPES or request.qclass != dns.rdataclass.IN:
            return None
        if self._client_source is not None:
            found = self._client_search(request)
            if found is None:
                return None
            search = found
        else:
            search = self._search if self._source is None else self._current_search()
        first = search.first
        if not first:
            return None
        key = request.key
        stored = self._stored.get(key)
        if stored is not None and self._client_source is not None and not stored.found_with(search):
            # Found with another search path than this client's now (another client's,
            # or this client's before it changed: its pod's address reused in another
            # namespace, a new resolv.conf search list): the search runs again for it.
            stored = None
        if stored is not None and stored.generation != self.changes.generation:
            stored = self._current(key, stored)
        if stored is not None:
            now = time.monotonic()
            if now >= stored.expires:
                del self._stored[key]
            elif not self._gates or self.admitted(request, stored.names):
                return self._give(
                    stored, request.wire, request.name_end, request.edns, request.do,
                    request.server, now,
                )  # fmt: skip
            # else: this client may not have what another one's search found.
            # The search runs again for it, through the acl, as without storage.
        name = key[: request.name_end - 12]
        start = suffix_start(name, first)
        if start <= 0:
            # Not below the first search domain (or the domain itself): not a
            # search the client started, so nothing to do.
            return None
        if not self._all_zones and not any(
            suffix_start(name, zone) >= 0 for zone in self._zone_wires
        ):
            return None
        return _Search(self, request, search, wire_labels(name[:start]))

    def _current(self, key: bytes, stored: _Stored) -> _Stored | None:
        """``stored``, or None (forgotten) when a change of local data since its search
        may have changed the answer of any name it asked."""
        changes = self.changes
        if any(changes.affects(name, stored.generation) for name in stored.names):
            del self._stored[key]
            return None
        stored.generation = changes.generation
        return stored

    def admitted(self, request: Request, names: tuple[str, ...]) -> bool:
        """True when every later plugin that decides by client lets this one ask ``names``.

        A stored answer skips the chain after autopath, and with it an acl
        there: it is given (and kept) only for a client the acl would have let
        ask every name its search asked.
        """
        return all(admits(request, names) for admits in self._gates)

    def _current_search(self) -> SearchPath:
        """The search path the supplying plugin gives now; a change forgets stored answers."""
        assert self._source is not None
        raw = self._source()
        if raw is not self._raw:
            copy = tuple(raw)
            if copy != self._raw_copy:
                self._search = SearchPath(self._valid_domains(copy))
                self._stored.clear()
                self._raw_copy = copy
            self._raw = raw
        return self._search

    def _client_search(self, request: Request) -> SearchPath | None:
        """The search path of this request's client, from the supplying plugin.

        Stored answers are shared by the clients of one search path: each keeps
        the path it was found with and is given only to a client whose path is
        that same one now (so a client whose path changed searches again).
        """
        assert self._client_source is not None
        domains = self._client_source(request)
        if not domains:
            return None
        key = tuple(domains)
        path = self._client_paths.get(key)
        if path is None:
            if len(self._client_paths) >= MAX_STORED:
                self._client_paths.clear()
            path = self._client_paths[key] = SearchPath(self._valid_domains(key))
        return path

    def _valid_domains(self, domains: tuple[str, ...]) -> tuple[str, ...]:
        out: list[str] = []
        for domain in domains:
            try:
                out.extend(normalize_search((domain,)))
            except ValueError as exc:
                if domain not in self._warned:
                    self._warned.add(domain)
                    log.warning("plugin/autopath: search path of %s: %s", self.config.source, exc)
        return tuple(dict.fromkeys(out))

    # -- Answers ----------------------------------------------------------------

    def synthesize(
        self,
        request: Request,
        target: dns.name.Name,
        reply: Reply,
        lifetime: int,
        asked: tuple[str, ...],
        generation: int = 0,
        path: SearchPath | None = None,
    ) -> bytes:
        """CNAME from the name asked to ``target``, then ``reply``'s records.

        The CNAME's TTL is ``lifetime``: the shortest of the winning reply's
        TTLs and the negative TTLs of the names tried before it, since the
        alias holds only while all of them stay as they are. The answer is kept
        for that long under the asked question (never under another name),
        with the names ``asked`` to find it.
        """
        won = (
            reply
            if isinstance(reply, dns.message.Message)
            else dns.message.from_wire(reply, ignore_trailing=True)
        )
        # Built without EDNS and with RD/CD clear: rendering adds the asker's.
        out = dns.message.Message(id=request.id)
        out.flags = dns.flags.QR | (won.flags & (dns.flags.AA | dns.flags.RA | dns.flags.TC))
        qname = request.qname
        qtype = dns.rdatatype.RdataType.make(request.qtype)
        out.question.append(dns.rrset.RRset(qname, dns.rdataclass.IN, qtype))
        alias = dns.rdtypes.ANY.CNAME.CNAME(  # type: ignore[no-untyped-call]
            dns.rdataclass.IN, dns.rdatatype.CNAME, target
        )
        out.answer.append(dns.rrset.from_rdata(qname, lifetime, alias))
        out.answer.extend(won.answer)
        out.authority.extend(won.authority)
        prepared = PreparedReply.from_message(out)
        if lifetime > 0 and not won.flags & dns.flags.TC:
            self._store(request, prepared, lifetime, True, asked, generation, path)
        return prepared.render(request.wire, request.name_end, request.edns, request.do)

    def all_nxdomain(
        self,
        request: Request,
        first: Reply,
        lifetime: int,
        asked: tuple[str, ...],
        generation: int = 0,
        path: SearchPath | None = None,
    ) -> Reply:
        """Every candidate (``asked``) is NXDOMAIN: the reply for the name asked (the first try's).

        It is kept for the shortest negative TTL of all the tries.
        """
        if lifetime > 0:
            try:
                prepared = (
                    PreparedReply.from_message(first)
                    if isinstance(first, dns.message.Message)
                    else PreparedReply(first)
                )
            except (WireError, struct.error, IndexError, dns.exception.DNSException):
                return first
            self._store(request, prepared, lifetime, False, asked, generation, path)
        return first

    def _store(
        self,
        request: Request,
        prepared: PreparedReply,
        lifetime: int,
        success: bool,
        asked: tuple[str, ...],
        generation: int,
        path: SearchPath | None = None,
    ) -> None:
        if not self.admitted(request, asked):
            return  # an acl after autopath shaped it for this client alone
        stored = self._stored
        if len(stored) >= MAX_STORED:
            del stored[next(iter(stored))]
        stored[request.key] = _Stored(
            prepared, time.monotonic(), lifetime, success, asked, generation, path
        )

    # -- Metrics ----------------------------------------------------------------

    def metrics(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "coredns_autopath_success",
            "Counter of requests that did autopath.",
            labels=["server"],
        )
        for server, count in sorted(self._success.items()):
            family.add_metric([server], count)
        yield family
