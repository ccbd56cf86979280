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

from pycorefile import _wire

from ._parse import KindSettings

MAX_CHAIN = 16
"""CNAME links followed before a chain is judged broken (a loop, or abuse)."""
NO_RECORDS_TTL = 5
"""The lifetime of a reply with no records at all, before clamping (CoreDNS's)."""

_TTL = struct.Struct(">I")
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
    """Never stored: REFUSED, FORMERR, broken chains, expired signatures, ..."""

    @property
    def denial(self) -> bool:
        """True for what lives in the denial store (everything cached but SUCCESS)."""
        return self is not Category.SUCCESS


class _Chain(enum.Enum):
    ANSWERED = 1
    """The chain from the question name reaches records of the asked type."""
    ENDS = 2
    """A clean chain (possibly empty) that ends at a name without the asked type."""
    BROKEN = 3
    """Two targets for one name, a loop, or records unrelated to the question."""


def classify(
    msg: dns.message.Message, qname: dns.name.Name, qtype: int, do: bool, wall_time: float
) -> Category:
    """Sort a reply (whose question was already checked) into a ``Category``."""
    if msg.opcode() != dns.opcode.QUERY or qtype in (dns.rdatatype.AXFR, dns.rdatatype.IXFR):
        return Category.OTHER
    if msg.flags & dns.flags.TC:
        return Category.OTHER
    if do and _expired_signature(msg, wall_time):
        return Category.OTHER
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
        if any(_answers(rrset, qtype) for rrset in rrsets):
            result = _Chain.ANSWERED
            break
        cnames = [rrset for rrset in rrsets if rrset.rdtype == dns.rdatatype.CNAME]
        if not cnames:
            break
        if len(cnames) > 1 or len(cnames[0]) != 1:
            return _Chain.BROKEN
        name = cnames[0][0].target
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
    wire: bytes,
    category: Category,
    settings: KindSettings,
    servfail_ttl: float,
    keep_ad: bool,
) -> tuple[bytes, float]:
    """The bytes to store and how many seconds they live (0: do not store).

    The OPT record is dropped; each record keeps its own TTL, clamped to the
    kind's [MINTTL, TTL]; the entry lives as long as its shortest clamped TTL
    (for a denial that is the SOA's TTL unless another record expires
    sooner). SERVFAIL lives ``servfail_ttl``. The AD bit is cleared when the
    entry is for clients that did not set DO (RFC 6840 section 5.8).
    """
    wire = _wire.strip_opt(wire)
    offsets, ttls = _wire.ttl_offsets(wire)
    out = bytearray(wire)
    if not keep_ad:
        out[3] &= ~(_wire.FLAG_AD & 0xFF)
    if category is Category.SERVFAIL:
        ceiling = max(1, int(-(-servfail_ttl // 1)))
        for off, ttl in zip(offsets, ttls, strict=True):
            _TTL.pack_into(out, off, min(ttl, ceiling))
        return bytes(out), servfail_ttl
    if not ttls:
        return bytes(out), float(clamp(NO_RECORDS_TTL, settings.min_ttl, settings.max_ttl))
    shortest = None
    for off, ttl in zip(offsets, ttls, strict=True):
        clamped = clamp(ttl, settings.min_ttl, settings.max_ttl)
        _TTL.pack_into(out, off, clamped)
        shortest = clamped if shortest is None or clamped < shortest else shortest
    assert shortest is not None
    return bytes(out), float(shortest)
