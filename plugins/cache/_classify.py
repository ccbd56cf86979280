"""Which replies are stored, for how long, and with which TTLs (CoreDNS's ``response.Typify``).

Runs once per upstream reply (the miss path), so it may use dnspython; the hit
path never comes here.
"""

from __future__ import annotations

import enum
import struct
from collections.abc import Iterable

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset

from pycorefile.response import ANSWER, AUTHORITY, records
from pycorefile.wire import FLAG_TC, HEADER_LEN, WireError, strip_opt, ttl_offsets

from ._parse import KindSettings

MAX_CHAIN = 16
"""CNAME links followed before a chain is judged broken (a loop, or abuse)."""
NO_RECORDS_TTL = 5
"""The lifetime of a reply with no records at all, before clamping (CoreDNS's)."""

_TTL = struct.Struct(">I")
_HEAD = struct.Struct(">HHH")
"""The flags and the question and answer counts."""
_CHAIN_EXTRAS = frozenset({dns.rdatatype.RRSIG, dns.rdatatype.DNAME})
"""Answer records allowed off the CNAME chain: signatures and the DNAME a CNAME came from."""


class Category(enum.Enum):
    """What a reply is, as far as caching goes."""

    SUCCESS = "success"
    """An answer, a delegation, or an empty NOERROR without SOA."""
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    SERVFAIL = "servfail"
    """SERVFAIL or NOTIMP: kept only for the ``servfail`` duration."""
    OTHER = "other"
    """Never stored, though a complete reply: REFUSED, FORMERR, broken chains, ..."""
    UNUSABLE = "unusable"
    """Never stored, nor taken to refresh a stale entry (CoreDNS's verify rules):
    truncated, a signature outside its validity period (DO clients), a zone
    transfer or another opcode."""

    @property
    def denial(self) -> bool:
        """True for what lives in the denial store (everything cached but SUCCESS)."""
        return self is not Category.SUCCESS

    @property
    def stored(self) -> bool:
        """True for the categories a cache keeps."""
        return self is not Category.OTHER and self is not Category.UNUSABLE


class _Chain(enum.Enum):
    ANSWERED = 1
    """The chain from the question name reaches records of the asked type."""
    ENDS = 2
    """A clean chain (possibly empty) that ends at a name without the asked type."""
    BROKEN = 3
    """Two targets for one name, a loop, or records unrelated to the question."""


def parse_reply(wire: bytes) -> dns.message.Message:
    """A reply as ``classify`` needs it: every record in its own RRset.

    dnspython otherwise merges the records of one name and type into one
    RRset, and for a singleton type (CNAME) keeps only the last: two
    conflicting CNAMEs for one name would look like a clean chain.
    """
    return dns.message.from_wire(wire, ignore_trailing=True, one_rr_per_rrset=True)


def classify(
    msg: dns.message.Message, qname: dns.name.Name, qtype: int, do: bool, wall_time: float
) -> Category:
    """Sort a reply (whose question was already checked) into a ``Category``."""
    if msg.opcode() != dns.opcode.QUERY or qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
        return Category.UNUSABLE
    if msg.flags & dns.flags.TC:
        return Category.UNUSABLE
    if do and _expired_signature(msg, wall_time):
        return Category.UNUSABLE
    rcode = msg.rcode()
    if rcode in (dns.rcode.SERVFAIL, dns.rcode.NOTIMP):
        return Category.SERVFAIL
    soa = any(rrset.rdtype == dns.rdatatype.SOA for rrset in msg.authority)
    chain = _follow_chain(msg.answer, qname, qtype)
    if rcode == dns.rcode.NXDOMAIN:
        # The chain may lead to a name that does not exist (RFC 6604); without
        # an SOA there is no negative TTL, so nothing is stored (as CoreDNS).
        return Category.NXDOMAIN if soa and chain is _Chain.ENDS else Category.OTHER
    if rcode != dns.rcode.NOERROR or chain is _Chain.BROKEN:
        return Category.OTHER
    if chain is _Chain.ANSWERED:
        return Category.SUCCESS
    if soa:
        return Category.NODATA
    if msg.answer:
        return Category.OTHER  # a dangling chain: the target's records are missing
    return Category.SUCCESS  # a delegation, or an empty NOERROR without SOA


_FAST_TYPES: dict[int, int] = {1: 4, 28: 16}
"""Query types ``quick_classify`` handles (A, AAAA), with the rdata length of their records."""
_TYPE_SOA = 6
_TYPE_RRSIG = 46
_SOA_FIXED = 22
"""The shortest SOA rdata: two root names and five 32-bit fields."""


def quick_classify(wire: bytes, qtype: int, question_end: int = 0) -> Category | None:
    """``classify`` for the common simple reply, read from the bytes; None for the rest.

    Handles A and AAAA replies whose answers are all records of the asked type
    owned by the question name (a pointer to offset 12), with nothing but an
    SOA (or, after answers, anything) in the authority section, and no
    signatures. Anything else -- CNAME chains, DNSSEC, delegations, odd
    shapes -- returns None and gets the full classification with dnspython.
    The miss path then costs a walk over the bytes instead of a parse.
    ``question_end``, when the caller knows it, is where the records start.
    """
    size = _FAST_TYPES.get(qtype)
    if size is None or len(wire) < HEADER_LEN:
        return None
    flags, qdcount, ancount = _HEAD.unpack_from(wire, 2)
    if qdcount != 1 or flags & 0x7800 or flags & FLAG_TC:
        return None
    rcode = flags & 0xF
    if rcode in (dns.rcode.SERVFAIL, dns.rcode.NOTIMP):
        return Category.SERVFAIL
    if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
        return Category.OTHER
    soa = False
    try:
        for section, rtype, _rclass, _ttl, name_at, rdata_at, rdata_end in records(
            wire, question_end
        ):
            if section == ANSWER:
                if rtype != qtype or rdata_end - rdata_at != size or wire[name_at + 1] != 12:
                    return None  # another type, or not owned by the question name
                if wire[name_at] != 0xC0:
                    return None
            elif section == AUTHORITY:
                if rtype == _TYPE_SOA:
                    soa = True
                elif not ancount or rtype == _TYPE_RRSIG:
                    return None  # a delegation or signed denial: the full rules decide
            elif rtype == _TYPE_RRSIG:
                return None
    except WireError:
        return None
    if rcode == dns.rcode.NXDOMAIN:
        if ancount:
            return None
        return Category.NXDOMAIN if soa else Category.OTHER
    if ancount:
        return Category.SUCCESS
    return Category.NODATA if soa else Category.SUCCESS


def _follow_chain(answer: list[dns.rrset.RRset], qname: dns.name.Name, qtype: int) -> _Chain:
    by_owner: dict[dns.name.Name, list[dns.rrset.RRset]] = {}
    for rrset in answer:
        by_owner.setdefault(rrset.name, []).append(rrset)
    visited: set[dns.name.Name] = set()
    name = qname
    result = _Chain.ENDS
    for _ in range(MAX_CHAIN):
        if name in visited:
            return _Chain.BROKEN
        visited.add(name)
        rrsets = by_owner.get(name, [])
        targets = {cname.target for r in rrsets if r.rdtype == dns.rdatatype.CNAME for cname in r}
        if len(targets) > 1:
            return _Chain.BROKEN  # RFC 2181 section 10.1: an alias has one canonical name
        if any(_answers(rrset, qtype) for rrset in rrsets):
            result = _Chain.ANSWERED
            break
        if not targets:
            break
        (name,) = targets
    else:
        return _Chain.BROKEN
    for owner, rrsets in by_owner.items():
        if owner not in visited and any(r.rdtype not in _CHAIN_EXTRAS for r in rrsets):
            return _Chain.BROKEN
    return result


def _answers(rrset: dns.rrset.RRset, qtype: int) -> bool:
    if qtype == dns.rdatatype.ANY:
        return True
    if rrset.rdtype == dns.rdatatype.RRSIG:
        return qtype == dns.rdatatype.RRSIG
    return bool(rrset.rdtype == qtype)


def _expired_signature(msg: dns.message.Message, wall_time: float) -> bool:
    """True when an RRSIG of the answer or authority is outside its validity period."""
    now = int(wall_time)
    for rrset in _rrsets(msg.answer, msg.authority):
        if rrset.rdtype == dns.rdatatype.RRSIG:
            for sig in rrset:
                if not sig.inception <= now <= sig.expiration:
                    return True
    return False


def _rrsets(*sections: list[dns.rrset.RRset]) -> Iterable[dns.rrset.RRset]:
    for section in sections:
        yield from section


def clamp(ttl: int, low: int, high: int) -> int:
    """CoreDNS's ``computeTTL``: raise to ``low``, then cap at ``high`` (the cap wins)."""
    if ttl < low:
        ttl = low
    return min(ttl, high)


def stored_form(
    wire: bytes, category: Category, settings: KindSettings, servfail_ttl: float
) -> tuple[bytes, float, list[int]]:
    """The bytes to store, how many seconds they live (0: do not store), and
    where their TTLs are.

    The OPT record is dropped; each record keeps its own TTL, clamped to the
    kind's [MINTTL, TTL]; the entry lives as long as its shortest clamped TTL.
    For a denial that is normally the SOA's TTL, counted at most as the SOA's
    MINIMUM field (RFC 2308 section 5). SERVFAIL lives ``servfail_ttl``. The
    AD bit is kept as received: ``PreparedReply.render`` shows it only to
    clients that asked with AD or DO.
    """
    wire = strip_opt(wire)
    offsets, ttls = ttl_offsets(wire)
    out = bytearray(wire)
    if category is Category.SERVFAIL:
        ceiling = max(1, int(-(-servfail_ttl // 1)))
        for off, ttl in zip(offsets, ttls, strict=True):
            _TTL.pack_into(out, off, min(ttl, ceiling))
        return bytes(out), servfail_ttl, offsets
    if not ttls:
        lifetime = _lifetime(clamp(NO_RECORDS_TTL, settings.min_ttl, settings.max_ttl))
        return bytes(out), lifetime, offsets
    if category.denial:
        ttls = negative_ttls(wire, offsets, ttls)
    shortest = None
    for off, ttl in zip(offsets, ttls, strict=True):
        clamped = clamp(ttl, settings.min_ttl, settings.max_ttl)
        _TTL.pack_into(out, off, clamped)
        shortest = clamped if shortest is None or clamped < shortest else shortest
    assert shortest is not None
    return bytes(out), _lifetime(shortest), offsets


def negative_ttls(wire: bytes, offsets: list[int], ttls: list[int]) -> list[int]:
    """``ttls`` with each authority SOA's lowered to its MINIMUM field when that is smaller.

    RFC 2308 section 5: the negative TTL is the smaller of the SOA record's
    TTL and its MINIMUM. Authoritative servers that follow it send the SOA
    with that TTL already; some (CoreDNS's *file* among them) send the zone's
    SOA TTL, and a denial would otherwise be kept for up to the denial TTL
    cap. ``offsets`` are the TTL positions of ``wire`` (no OPT record), in
    message order.
    """
    ancount, nscount = struct.unpack_from(">HH", wire, 6)
    out = ttls
    for i in range(ancount, min(ancount + nscount, len(offsets))):
        off = offsets[i]
        rtype, rdlen = struct.unpack_from(">H6xH", wire, off - 4)
        if rtype != _TYPE_SOA or rdlen < _SOA_FIXED or off + 6 + rdlen > len(wire):
            continue
        (minimum,) = _TTL.unpack_from(wire, off + 6 + rdlen - 4)
        if minimum < out[i]:
            if out is ttls:
                out = list(ttls)
            out[i] = minimum
    return out


_LIFETIMES: dict[int, float] = {}
_LIFETIMES_MAX = 4096


def _lifetime(seconds: int) -> float:
    """``float(seconds)``, one object per value: entries of equal lifetime share it."""
    found = _LIFETIMES.get(seconds)
    if found is None:
        if len(_LIFETIMES) >= _LIFETIMES_MAX:
            _LIFETIMES.clear()
        found = _LIFETIMES[seconds] = float(seconds)
    return found
