"""One authoritative zone: reading a zone file, and answering a question from it (pure).

``load_zone`` reads a zone file with dnspython's zone-file reader into an
immutable ``Zone``; ``lookup`` answers one question from it as CoreDNS's
*file* plugin does (``plugin/file/lookup.go``): apex NS in the authority
section of positive answers, SOA in negative ones, referrals at zone cuts
with their glue, wildcards from the closest encloser (RFC 4592), empty
non-terminals as NODATA, CNAMEs and DNAMEs chased inside the zone. Nothing
here does I/O except ``load_zone`` reading the file.
"""

from __future__ import annotations

import bisect
import enum
from dataclasses import dataclass, field

import dns.exception
import dns.name
import dns.node
import dns.rdataclass
import dns.rdataset
import dns.rdatatype
import dns.rrset
import dns.tokenizer
import dns.zone
import dns.zonefile

A = dns.rdatatype.A
AAAA = dns.rdatatype.AAAA
CNAME = dns.rdatatype.CNAME
DNAME = dns.rdatatype.DNAME
DS = dns.rdatatype.DS
MX = dns.rdatatype.MX
NS = dns.rdatatype.NS
NSEC = dns.rdatatype.NSEC
RRSIG = dns.rdatatype.RRSIG
SOA = dns.rdatatype.SOA
SRV = dns.rdatatype.SRV
SVCB = dns.rdatatype.SVCB
HTTPS = dns.rdatatype.HTTPS
NONE = dns.rdatatype.NONE

MAX_CHASE = 8
"""CNAMEs followed inside a zone, and nested lookups, before giving up (CoreDNS's 8)."""

_WILD = b"*"


class ZoneFileError(Exception):
    """A zone file that cannot be served: unreadable, unparsable, no SOA, NSEC3."""


class ZoneFileUnreadable(ZoneFileError):
    """The zone file cannot be opened or read (missing, no permission)."""


class Result(enum.Enum):
    """What a lookup found (CoreDNS's ``file.Result``)."""

    SUCCESS = "success"
    NXDOMAIN = "nxdomain"
    NODATA = "nodata"
    DELEGATION = "delegation"
    SERVFAIL = "servfail"


Node = dict[tuple[int, int], dns.rrset.RRset]
"""The RRsets of one owner name, by (type, covered type)."""


@dataclass(frozen=True)
class Zone:
    """A loaded zone, never changed once built (a reload builds a new one)."""

    origin: dns.name.Name
    file: str
    serial: int
    nodes: dict[dns.name.Name, Node]
    """Every owner name with records (lowercased; dnspython names compare case-insensitively)."""
    existing: frozenset[dns.name.Name]
    """Owner names plus the empty non-terminals above them, up to the origin."""
    names: list[dns.name.Name] = field(default_factory=list)
    """Owner names in DNSSEC canonical order, for NSEC denial (empty when the zone has no NSEC)."""

    @property
    def soa(self) -> dns.rrset.RRset:
        return self.nodes[self.origin][(SOA, NONE)]

    def rrset(self, name: dns.name.Name, rdtype: int, covers: int = NONE) -> dns.rrset.RRset | None:
        node = self.nodes.get(name)
        return None if node is None else node.get((rdtype, covers))

    def with_sigs(self, name: dns.name.Name, rdtype: int, do: bool) -> list[dns.rrset.RRset]:
        """The RRset of ``rdtype`` at ``name`` and, when ``do``, the RRSIGs covering it."""
        found = self.rrset(name, rdtype)
        if found is None:
            return []
        out = [found]
        if do:
            sig = self.rrset(name, RRSIG, rdtype)
            if sig is not None:
                out.append(sig)
        return out

    def apex_ns(self, do: bool) -> list[dns.rrset.RRset]:
        return self.with_sigs(self.origin, NS, do)

    def apex_soa(self, do: bool) -> list[dns.rrset.RRset]:
        return self.with_sigs(self.origin, SOA, do)


@dataclass
class Answer:
    """The three sections of a reply and what kind of reply it is."""

    result: Result
    answer: list[dns.rrset.RRset] = field(default_factory=list)
    authority: list[dns.rrset.RRset] = field(default_factory=list)
    additional: list[dns.rrset.RRset] = field(default_factory=list)
    external: dns.name.Name | None = None
    """A CNAME target outside the zone that the answer stops at (for the caller to resolve)."""
    empty_non_terminal: bool = False
    """NODATA because qname owns nothing but has names below it (fallthrough applies)."""


# -- Loading ---------------------------------------------------------------------------


def read_zone_file(path: str) -> str:
    """The text of a zone file (I/O: call it off the event loop)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            return f.read()
    except OSError as exc:
        raise ZoneFileUnreadable(
            f"failed to open zone file {path!r}: {exc.strerror or exc}"
        ) from None


def load_zone(path: str, origin: str) -> Zone:
    """Read and parse the zone file ``path`` for ``origin``; ``ZoneFileError`` when unusable."""
    return parse_zone(read_zone_file(path), origin, path)


class _LineTokenizer(dns.tokenizer.Tokenizer):
    """A tokenizer that knows the line of the last token it read.

    dnspython reports an error in a record's data with the line *after* the
    record (the end of line is read first); this gives the record's own line.
    """

    token_line = 1

    def get(self, want_leading: bool = False, want_comment: bool = False) -> dns.tokenizer.Token:
        line = self.line_number
        again = self.ungotten_token is not None  # read before, its line already noted
        token = super().get(want_leading, want_comment)
        if not again and not token.is_eol_or_eof():
            self.token_line = line
        return token


def _where(tokenizer: dns.tokenizer.Tokenizer) -> tuple[str, int]:
    if isinstance(tokenizer, _LineTokenizer):
        return tokenizer.filename, tokenizer.token_line
    return tokenizer.filename, tokenizer.line_number


def parse_zone(text: str, origin: str, filename: str) -> Zone:
    """Parse zone-file text for ``origin`` (``$INCLUDE`` allowed, as CoreDNS)."""
    origin_name = dns.name.from_text(origin).canonicalize()
    zone = dns.zone.Zone(origin_name, relativize=False)
    tokenizer = _LineTokenizer(text, filename)
    try:
        with zone.writer(replacement=True) as txn:
            reader = dns.zonefile.Reader(tokenizer, dns.rdataclass.IN, txn, allow_include=True)
            try:
                reader.read()
            except dns.zonefile.CNAMEAndOtherData as exc:
                file, line = _where(reader.tok)
                raise ZoneFileError(
                    f"{file}:{line}: {exc} (a name with a CNAME may hold no other data)"
                ) from None
            except dns.exception.SyntaxError as exc:
                # dnspython's "FILE:LINE: detail", with the line of the record at fault.
                file, line = _where(reader.tok)
                detail = str(exc).removeprefix(f"{file}:{reader.tok.line_number}: ")
                raise ZoneFileError(
                    f"failed to parse file {filename!r} for origin {origin_name} with error "
                    f"{file}:{line}: {detail}"
                ) from None
    except ZoneFileError:
        raise
    except OSError as exc:  # an $INCLUDE that cannot be read
        raise ZoneFileError(
            f"failed to parse file {filename!r} for origin {origin_name}: {exc}"
        ) from None
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        raise ZoneFileError(
            f"failed to parse file {filename!r} for origin {origin_name} with error {exc}"
        ) from None
    return build_zone(zone, filename)


_LOWERED_FIELDS = {
    NS: ("target",),
    CNAME: ("target",),
    MX: ("exchange",),
    SOA: ("mname", "rname"),
    SVCB: ("target",),
    HTTPS: ("target",),
}
"""Rdata names CoreDNS lowercases on insert (``plugin/file/zone.go``)."""


def _lowered(rdataset: dns.rdataset.Rdataset) -> dns.rdataset.Rdataset:
    fields = _LOWERED_FIELDS.get(rdataset.rdtype)
    if not fields:
        return rdataset
    out = dns.rdataset.Rdataset(rdataset.rdclass, rdataset.rdtype, rdataset.covers, rdataset.ttl)
    for rdata in rdataset:
        out.add(
            rdata.replace(**{name: getattr(rdata, name).canonicalize() for name in fields}),
            rdataset.ttl,
        )
    return out


def _rrset(owner: dns.name.Name, rdataset: dns.rdataset.Rdataset) -> dns.rrset.RRset:
    """``rdataset``'s records owned by ``owner``."""
    out = dns.rrset.RRset(owner, rdataset.rdclass, rdataset.rdtype, rdataset.covers)
    for rdata in rdataset:
        out.add(rdata, rdataset.ttl)
    return out


def build_zone(zone: dns.zone.Zone, filename: str) -> Zone:
    """The servable form of a parsed dnspython zone: SOA checked, names lowercased."""
    origin = zone.origin
    assert origin is not None
    nodes: dict[dns.name.Name, Node] = {}
    has_nsec = False
    for name, node in zone.nodes.items():
        owner = name.canonicalize()
        sets: Node = {}
        for rdataset in node.rdatasets:
            rdtype = rdataset.rdtype
            if rdtype in (dns.rdatatype.NSEC3, dns.rdatatype.NSEC3PARAM):
                raise ZoneFileError(
                    f"NSEC3 zone is not supported, dropping RR: {owner} for zone: {origin}"
                )
            if rdtype == SOA and owner != origin:
                raise ZoneFileError(f"SOA record for {owner} is not at the origin {origin}")
            has_nsec = has_nsec or rdtype == NSEC
            sets[(rdtype, rdataset.covers)] = _rrset(owner, _lowered(rdataset))
        if sets:
            nodes[owner] = sets
    apex = nodes.get(origin, {})
    soa = apex.get((SOA, NONE))
    if soa is None:
        raise ZoneFileError(f"file {filename!r} has no SOA record for origin {origin}")
    existing: set[dns.name.Name] = set()
    for name in nodes:
        while name not in existing:
            existing.add(name)
            if name == origin or len(name) <= len(origin):
                break
            name = name.parent()
    serial = soa[0].serial
    names = sorted(nodes) if has_nsec else []
    return Zone(origin, filename, int(serial), nodes, frozenset(existing), names)


# -- Answering -------------------------------------------------------------------------


def lookup(zone: Zone, qname: dns.name.Name, qtype: int, do: bool, depth: int = 0) -> Answer:
    """Answer ``qname`` (lowercased, in the zone) ``qtype`` from ``zone``, as CoreDNS's file."""
    if depth > MAX_CHASE:
        return Answer(Result.SERVFAIL)
    origin = zone.origin
    if qname == origin:
        if qtype == SOA:
            return Answer(Result.SUCCESS, zone.apex_soa(do), zone.apex_ns(do))
        if qtype == NS:
            ns = zone.apex_ns(do)
            return Answer(Result.SUCCESS, ns, [], _glue(zone, ns[0], do) if ns else [])

    # From the apex down towards qname: a DNAME or a zone cut on the way decides.
    for depth_labels in range(len(origin), len(qname) + 1):
        name = qname.split(depth_labels)[1]
        node = zone.nodes.get(name)
        if node is None:
            continue
        dname = node.get((DNAME, NONE))
        if dname is not None and name != qname:
            return _dname(zone, qname, qtype, do, depth, name, dname)
        referral = _delegation(zone, name, qname, qtype, do)
        if referral is not None:
            return referral

    node = zone.nodes.get(qname)
    if node is not None:
        return _from_node(zone, qname, qname, qtype, do, depth)
    if qname in zone.existing:
        empty = _negative(zone, qname, Result.NODATA, do)
        empty.empty_non_terminal = True
        return empty

    # RFC 4592: the source of synthesis is the wildcard below the closest encloser.
    encloser = qname.parent()
    while encloser not in zone.existing:
        encloser = encloser.parent()
    wildcard = dns.name.Name((_WILD, *encloser.labels))
    if wildcard in zone.nodes:
        return _from_node(zone, wildcard, qname, qtype, do, depth)
    if wildcard in zone.existing:
        return _negative(zone, qname, Result.NODATA, do)  # the wildcard is an ENT
    return _negative(zone, qname, Result.NXDOMAIN, do, encloser)


def _owned(rrsets: list[dns.rrset.RRset], owner: dns.name.Name) -> list[dns.rrset.RRset]:
    """RRsets renamed to ``owner`` (wildcard synthesis); unchanged when already owned so."""
    out = []
    for rrset in rrsets:
        if rrset.name == owner:
            out.append(rrset)
            continue
        out.append(_rrset(owner, rrset))
    return out


def _from_node(
    zone: Zone, source: dns.name.Name, qname: dns.name.Name, qtype: int, do: bool, depth: int
) -> Answer:
    """The answer from an existing node (``source`` is qname or the wildcard synthesising it)."""
    if qtype != CNAME and zone.rrset(source, CNAME) is not None:
        chain = _owned(zone.with_sigs(source, CNAME, do), qname)
        return _chase(zone, chain, qtype, do, depth + 1)
    rrsets = zone.with_sigs(source, qtype, do)
    if not rrsets:
        return _negative(zone, qname, Result.NODATA, do, nsec_at=source)
    rrsets = _owned(rrsets, qname)
    authority = zone.apex_ns(do)
    if do and source != qname:
        # An NSEC saying no closer name exists under this wildcard.
        authority = authority + _nsec_before(zone, qname, do)
    return Answer(Result.SUCCESS, rrsets, authority, _additional(zone, rrsets, do))


def _negative(
    zone: Zone,
    qname: dns.name.Name,
    result: Result,
    do: bool,
    encloser: dns.name.Name | None = None,
    nsec_at: dns.name.Name | None = None,
) -> Answer:
    """NXDOMAIN or NODATA: the SOA (and, with DO, the NSECs that deny) in authority."""
    authority = zone.apex_soa(do)
    if do:
        if nsec_at is not None:
            authority = authority + zone.with_sigs(nsec_at, NSEC, do)
        else:
            denial = _nsec_before(zone, qname, do)
            authority = authority + denial
            if result is Result.NXDOMAIN and encloser is not None:
                wild = _nsec_before(zone, dns.name.Name((_WILD, *encloser.labels)), do)
                if wild and (not denial or wild[0].name != denial[0].name):
                    authority = authority + wild
    return Answer(result, [], authority)


def _nsec_before(zone: Zone, name: dns.name.Name, do: bool) -> list[dns.rrset.RRset]:
    """The NSEC (and its RRSIG) of the last owner name before ``name`` in canonical order."""
    if not zone.names:
        return []
    index = bisect.bisect_left(zone.names, name) - 1
    if index < 0:
        return []
    return zone.with_sigs(zone.names[index], NSEC, do)


def _delegation(
    zone: Zone, name: dns.name.Name, qname: dns.name.Name, qtype: int, do: bool
) -> Answer | None:
    """A referral when ``name`` (below the apex) is a zone cut; DS at the cut is answered."""
    if name == zone.origin:
        return None
    ns = zone.rrset(name, NS)
    if ns is None or (qtype == DS and name == qname):
        return None
    authority = [ns]
    if do:
        authority += zone.with_sigs(name, DS, do)
    return Answer(Result.DELEGATION, [], authority, _glue(zone, ns, do))


def _glue(zone: Zone, ns: dns.rrset.RRset, do: bool) -> list[dns.rrset.RRset]:
    """A and AAAA of the NS targets below the NS owner (CoreDNS's ``Tree.Glue``)."""
    out: list[dns.rrset.RRset] = []
    for rdata in ns:
        target = rdata.target
        if target.is_subdomain(ns.name):
            out += zone.with_sigs(target, A, do)
            out += zone.with_sigs(target, AAAA, do)
    return out


def _additional(zone: Zone, rrsets: list[dns.rrset.RRset], do: bool) -> list[dns.rrset.RRset]:
    """A and AAAA of in-zone MX, SRV, SVCB and HTTPS targets, each target once."""
    out: list[dns.rrset.RRset] = []
    seen: set[dns.name.Name] = set()
    for rrset in rrsets:
        if rrset.rdtype == MX:
            targets = [rdata.exchange for rdata in rrset]
        elif rrset.rdtype in (SRV, SVCB, HTTPS):
            targets = [rdata.target for rdata in rrset]
        else:
            continue
        for target in targets:
            if target in seen or not target.is_subdomain(zone.origin):
                continue
            seen.add(target)
            out += zone.with_sigs(target, A, do)
            out += zone.with_sigs(target, AAAA, do)
    return out


def _dname(
    zone: Zone,
    qname: dns.name.Name,
    qtype: int,
    do: bool,
    depth: int,
    owner: dns.name.Name,
    dname: dns.rrset.RRset,
) -> Answer:
    """RFC 6672: the DNAME, a CNAME synthesised from it, and the chase of its target."""
    target_base = dname[0].target
    try:
        target = qname.relativize(owner).concatenate(target_base)
    except dns.name.NameTooLong:
        return Answer(Result.SERVFAIL)  # CoreDNS answers YXDOMAIN's cousin: it fails
    if target == qname:
        return Answer(Result.SERVFAIL)  # a substitution that changes nothing can only loop
    cname = dns.rrset.from_text(qname, dname.ttl, "IN", "CNAME", target.to_text())
    records = zone.with_sigs(owner, DNAME, do)
    if qtype == CNAME:
        return Answer(Result.SUCCESS, [*records, cname], zone.apex_ns(do))
    chased = _chase(zone, [cname], qtype, do, depth + 1)
    chased.answer = [*records, *chased.answer]
    return chased


def _chase(zone: Zone, chain: list[dns.rrset.RRset], qtype: int, do: bool, depth: int) -> Answer:
    """Follow the CNAME at the end of ``chain`` inside the zone (CoreDNS's externalLookup)."""
    rrsets = list(chain)
    for _ in range(MAX_CHASE + 1):
        target = _cname_target(rrsets)
        if not target.is_subdomain(zone.origin):
            return Answer(
                Result.SUCCESS, rrsets, zone.apex_ns(do), _additional(zone, rrsets, do), target
            )
        referral = _cut_above(zone, target, qtype, do)
        if referral is not None:
            referral.answer = rrsets
            return referral
        if target not in zone.nodes or qtype == NS or (qtype == SOA and target == zone.origin):
            # CoreDNS asks the whole server again here; inside one zone that is this lookup.
            found = lookup(zone, target, qtype, do, depth + 1)
            return joined(zone, rrsets, found, do)
        if zone.rrset(target, CNAME) is not None:
            rrsets += zone.with_sigs(target, CNAME, do)
            continue
        rrsets += zone.with_sigs(target, qtype, do)
        return Answer(Result.SUCCESS, rrsets, zone.apex_ns(do), _additional(zone, rrsets, do))
    return Answer(Result.SUCCESS, rrsets, zone.apex_ns(do), _additional(zone, rrsets, do))


def _cname_target(rrsets: list[dns.rrset.RRset]) -> dns.name.Name:
    for rrset in reversed(rrsets):
        if rrset.rdtype == CNAME:
            target: dns.name.Name = rrset[0].target
            return target.canonicalize()
    raise ValueError("no CNAME in the chain")


def _cut_above(zone: Zone, target: dns.name.Name, qtype: int, do: bool) -> Answer | None:
    """The referral of the first zone cut between the apex and ``target`` (inclusive)."""
    for labels in range(len(zone.origin) + 1, len(target) + 1):
        name = target.split(labels)[1]
        if name in zone.nodes:
            referral = _delegation(zone, name, target, qtype, do)
            if referral is not None:
                return referral
    return None


def joined(zone: Zone, chain: list[dns.rrset.RRset], found: Answer, do: bool) -> Answer:
    """``chain`` followed by the answer for its target, with the target's rcode (RFC 6604)."""
    result = found.result
    if result is Result.SUCCESS and not found.answer:
        result = Result.NODATA
    elif result is Result.DELEGATION:
        result = Result.NODATA if not found.answer else Result.SUCCESS
    rrsets = chain + found.answer
    authority = (
        zone.apex_soa(do) if result in (Result.NXDOMAIN, Result.NODATA) else zone.apex_ns(do)
    )
    return Answer(result, rrsets, authority, _additional(zone, rrsets, do), found.external)
