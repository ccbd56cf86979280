"""Prepared answers: the host table turned into wire bytes once, when it is built.

A query is then a dictionary lookup on its lowercased question bytes plus a
splice: the client's ID and flags, our stored counts, the client's question
(name, type and class, exactly as asked) and the stored records. Every record
names its owner with a compression pointer to offset 12, where the question
name always starts, and every other name in the records is written out in
full, so one stored answer fits every name it belongs to whatever that name's
length: all names of an entry share one answer, and a wildcard answer serves
any name below it, owned by the query name, never by ``*``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from pycorefile import Fallthrough, Reply, Request
from pycorefile.wire import PreparedReply, name_to_text
from pycorefile.zones import reverse_name

from ._table import HostEntry, MeshTable, names_of

TYPE_A = 1
TYPE_CNAME = 5
TYPE_SOA = 6
TYPE_PTR = 12
TYPE_AAAA = 28
CLASS_IN = 1

MAX_ROTATIONS = 16
"""How many orders of a long address list are prepared; each begins with a different address."""
MAX_CNAME_CHAIN = 8

_U16 = struct.Struct(">H")
_TYPE_CLASS = {
    rtype: struct.pack(">HH", rtype, CLASS_IN)
    for rtype in (TYPE_A, TYPE_AAAA, TYPE_CNAME, TYPE_PTR)
}
_POINTER_TO_QUESTION = b"\xc0\x0c"
_WILDCARD_LABEL = b"\x01*"

# Header flags of our answers: QR, AA and RA (this server recurses through the
# rest of its chain, and a missing RA makes dig and some stubs complain); the
# query's RD and CD bits are copied in when rendering.
_BASE_FLAGS = 0x8000 | 0x0400 | 0x0080


_LENGTH = [bytes((n,)) for n in range(256)]


def name_wire(name: str) -> bytes:
    """Wire form of a lowercased FQDN in presentation form (``a.example.`` → ``\\x01a\\x07...``).

    The sources validated the names (plain labels of at most 63 characters).
    """
    if name == ".":
        return b"\x00"
    # "a.example." splits into [b"a", b"example", b""]: the empty last label is the root.
    return b"".join([_LENGTH[len(label)] + label for label in name.encode("ascii").split(b".")])


# -- What a lookup returns ----------------------------------------------------------


class Answer(PreparedReply):
    """One prepared reply of the table: the question is always the query's own."""

    __slots__ = ()

    def __init__(self, rcode: int, answers: int, authority: int, records: bytes) -> None:
        self._splice(_BASE_FLAGS | rcode, answers, authority, records)


class EmptyName(Answer):
    """The NODATA answer of a name that exists only because names below it do.

    Kept apart from a host's NODATA because a wildcard above it still
    answers it: ``*.example.com`` answers ``deep.example.com`` even when
    ``*.deep.example.com`` exists too.
    """

    __slots__ = ()


class Rotation:
    """Several orders of one address list, handed out in turn (round robin)."""

    __slots__ = ("_answers", "_next")

    def __init__(self, answers: Sequence[Answer]) -> None:
        self._answers = tuple(answers)
        self._next = 0

    def render(self, query: bytes, name_end: int, edns: bool, do: bool) -> bytes:
        i = self._next
        self._next = i + 1 if i + 1 < len(self._answers) else 0
        return self._answers[i].render(query, name_end, edns, do)

    @property
    def orders(self) -> tuple[Answer, ...]:
        return self._answers


@dataclass(frozen=True, slots=True)
class Chase:
    """An ExternalName whose target is not in the table: resolved by the rest of the chain.

    ``chain`` lists the CNAME links from the query name (None: the name as
    asked) to ``target``, the name passed on.
    """

    chain: tuple[tuple[str | None, str], ...]
    target: str
    ttl: int

    def merge(self, request: Request, reply: Reply) -> Reply:
        """Our CNAME chain in front of what the next plugin answered for the target."""
        out = request.reply(authoritative=True)
        out.flags |= dns.flags.RA
        for owner, target in self.chain:
            out.answer.append(
                dns.rrset.from_text(
                    request.qname if owner is None else owner,
                    self.ttl,
                    dns.rdataclass.IN,
                    dns.rdatatype.CNAME,
                    target,
                )
            )
        try:
            got = (
                reply
                if isinstance(reply, dns.message.Message)
                else dns.message.from_wire(reply, ignore_trailing=True)
            )
        except Exception:
            return out
        rcode = got.rcode()
        # A failed lookup of the target leaves the CNAME alone: the client may
        # still follow it itself. NOERROR and NXDOMAIN are real answers.
        if rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            out.set_rcode(rcode)
            out.answer.extend(got.answer)
            out.authority.extend(got.authority)
        return out


Found = Answer | Rotation | Chase


# -- What a new table changes -------------------------------------------------------


def changed_names(
    old: Mapping[str, HostEntry], new: Mapping[str, HostEntry], domain: str, namespace: str
) -> tuple[frozenset[str], frozenset[str]]:
    """What answers may differ between the tables built from ``old`` and ``new``.

    The names of every entry that is new, gone or different (each name form:
    FQDN, short names, alt hosts), the reverse names of its addresses (PTR),
    the ExternalNames whose chain reaches a changed name, and every name
    above those (empty non-terminals appear and vanish); and, second, the
    parents of changed wildcards, under which every name may have changed.
    Pure and proportional to the tables' size: run it off the event loop.
    """
    names: set[str] = set()
    below: set[str] = set()

    def claim(entry: HostEntry) -> None:
        for name in names_of(entry, domain, namespace):
            names.add(name)
            if name.startswith("*."):
                below.add(name[2:])
        for address in entry.addresses:
            names.add(reverse_name(address))

    for host, entry in old.items():
        if new.get(host) != entry:
            claim(entry)
    for host, entry in new.items():
        if old.get(host) != entry:
            claim(entry)
    if not names:
        return frozenset(), frozenset()
    aliases = {id(e): e for table in (old, new) for e in table.values() if e.cname}
    for _ in range(MAX_CNAME_CHAIN + 1):
        reached = [
            e for e in aliases.values() if e.host not in names and _covered(e.cname, names, below)
        ]
        if not reached:
            break
        for entry in reached:
            claim(entry)
    for name in list(names):
        while name != ".":
            name = name.partition(".")[2] or "."
            if name in names:
                break
            names.add(name)
    return frozenset(names), frozenset(below)


def _covered(name: str, names: set[str], below: set[str]) -> bool:
    """True when ``name`` is one of ``names`` or at or under one of ``below``."""
    if name in names:
        return True
    while below:
        if name in below:
            return True
        if name == ".":
            return False
        name = name.partition(".")[2] or "."
    return False


# -- The prepared table -------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """What shapes the answers besides the table."""

    zones: tuple[str, ...] = (".",)
    ttl: int = 30
    domain: str = "cluster.local."
    namespace: str = ""
    fallthrough: Fallthrough | None = None
    serial: int = 1


class PreparedTable:
    """Answers keyed on the lowercased question: name wire + type + class.

    ``answers`` holds A, AAAA, CNAME and PTR answers (a known name lacking a
    family has a NODATA answer there too); ``known`` maps every name that
    exists (hosts, the names above them, reverse names) to its NODATA answer
    (or the chase of an ExternalName), for the other types. Wildcards are
    stored under their own name (``\\x01*`` + parent).
    """

    __slots__ = (
        "_apexes", "_fallthrough", "_zones", "answers", "entries", "hosts", "known", "wildcards",
    )  # fmt: skip

    def __init__(self, table: MeshTable, settings: Settings) -> None:
        builder = _Builder(settings)
        builder.add_table(table)
        self.hosts: Mapping[str, HostEntry] = table.entries
        """The entries the answers were built from (to tell what the next table changes)."""
        self.answers: dict[bytes, Answer | Rotation] = builder.answers
        self.known: dict[bytes, Answer | Chase] = builder.known
        self.wildcards = builder.wildcards
        self.entries = len(table)
        self._apexes = builder.apex_list()
        self._zones = Fallthrough(settings.zones)
        self._fallthrough = settings.fallthrough

    def lookup(self, request: Request) -> Found | None:
        """The answer for a query; None when the next plugin should have it."""
        key = request.key
        found = self.answers.get(key[:-2])
        if found is not None:
            return found
        return self.miss(request)

    def miss(self, request: Request) -> Found | None:
        """No prepared answer for this exact question: wildcard, NODATA, NXDOMAIN or next."""
        key = request.key
        name = key[:-6]
        known = self.known.get(name)
        if self.wildcards and (known is None or type(known) is EmptyName):
            wild = self._wildcard(name)
            if wild is not None:
                found = self.answers.get(wild + key[-6:-2])
                if found is not None:
                    return found
                known = self.known[wild]
        if type(known) is Chase:
            return known
        text = request.name
        if not self._zones.through(text):
            return None
        if self._fallthrough is not None and self._fallthrough.through(text):
            return None
        if known is not None:
            return known
        return self._nxdomain(text)

    def _wildcard(self, name: bytes) -> bytes | None:
        """The most specific wildcard above ``name`` (its stored key), if any."""
        pos = 0
        while name[pos]:
            pos += name[pos] + 1
            candidate = _WILDCARD_LABEL + name[pos:]
            if candidate in self.known:
                return candidate
        return None

    def _nxdomain(self, name: str) -> Answer:
        for apex, answer in self._apexes:
            if apex == "." or name == apex or name.endswith("." + apex):
                return answer
        return self._apexes[-1][1]


class _Builder:
    """Turns a MeshTable into the two dictionaries (pure, no I/O)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ttl = struct.pack(">I", settings.ttl)
        self.answers: dict[bytes, Answer | Rotation] = {}
        self.known: dict[bytes, Answer | Chase] = {}
        self.wildcards = False
        self.zones = Fallthrough(settings.zones)
        self.everywhere = "." in settings.zones
        domain = settings.domain
        apexes = set(settings.zones)
        if self.zones.through(domain):
            apexes.add(domain)
        apexes.add(".")
        self.apexes = sorted(apexes, key=len, reverse=True)
        self._apex_set = frozenset(apexes)
        self._negative: dict[tuple[str, int], Answer] = {}
        self._empty: dict[str, EmptyName] = {}
        self._apex_cache: dict[str, str] = {}
        self._headers: dict[tuple[int, int], bytes] = {}
        self._nodata_by_parent: dict[str, Answer] = {}
        self._wires: dict[str, bytes] = {}

    # -- Negative answers ----------------------------------------------------------

    def apex_of(self, name: str) -> str:
        """The longest zone (or the cluster domain) holding ``name``; ``.`` at worst."""
        if name in self._apex_set:
            return name
        parent = name.partition(".")[2] or "."
        apex = self._apex_cache.get(parent)
        if apex is None:
            apex = self._apex_cache[parent] = next(
                a for a in self.apexes if a == "." or parent == a or parent.endswith("." + a)
            )
        return apex

    def wire(self, name: str) -> bytes:
        """``name_wire``, faster for tables: the parent's wire form is remembered.

        Table names share few parents (``ns1.svc.cluster.local.``, a /24's
        reverse zone), so only the first label is encoded per name.
        """
        first, _, parent = name.partition(".")
        tail = self._wires.get(parent)
        if tail is None:
            tail = self._wires[parent] = name_wire(parent or ".")
        label = first.encode("ascii")
        return _LENGTH[len(label)] + label + tail

    def nodata(self, name: str) -> Answer:
        """The NODATA answer for a name (its zone's SOA), cached by the name's parent."""
        if name in self._apex_set:
            return self.negative(name, dns.rcode.NOERROR)
        parent = name.partition(".")[2] or "."
        found = self._nodata_by_parent.get(parent)
        if found is None:
            found = self._nodata_by_parent[parent] = self.negative(
                self.apex_of(name), dns.rcode.NOERROR
            )
        return found

    def negative(self, apex: str, rcode: int) -> Answer:
        """NODATA or NXDOMAIN with the apex's SOA in the authority section (cacheable)."""
        found = self._negative.get((apex, rcode))
        if found is None:
            found = self._negative[(apex, rcode)] = Answer(rcode, 0, 1, self.soa(apex))
        return found

    def empty(self, apex: str) -> EmptyName:
        """The NODATA answer of an empty non-terminal in ``apex``."""
        found = self._empty.get(apex)
        if found is None:
            found = self._empty[apex] = EmptyName(dns.rcode.NOERROR, 0, 1, self.soa(apex))
        return found

    def soa(self, apex: str) -> bytes:
        owner = name_wire(apex)
        suffix = "" if apex == "." else apex
        rdata = (
            name_wire("ns.dns." + suffix)
            + name_wire("hostmaster." + suffix)
            + struct.pack(
                ">IIIII", self.settings.serial & 0xFFFFFFFF, 7200, 1800, 86400, self.settings.ttl
            )
        )
        return self.record(owner, TYPE_SOA, rdata)

    def apex_list(self) -> tuple[tuple[str, Answer], ...]:
        return tuple((a, self.negative(a, dns.rcode.NXDOMAIN)) for a in self.apexes)

    # -- Records -------------------------------------------------------------------

    def record(self, owner: bytes, rtype: int, rdata: bytes) -> bytes:
        key = (rtype, len(rdata))
        header = self._headers.get(key)
        if header is None:
            header = self._headers[key] = (
                struct.pack(">HH", rtype, CLASS_IN) + self.ttl + _U16.pack(len(rdata))
            )
        return owner + header + rdata

    def address_answer(
        self,
        owner: bytes,
        addresses: Sequence[bytes],
        rtype: int,
        prefix: bytes,
        prefix_count: int,
        apex: str,
    ) -> Answer | Rotation:
        """The answer for one family: records in turn, or NODATA when there are none."""
        if not addresses:
            if not prefix_count:
                return self.negative(apex, dns.rcode.NOERROR)
            return Answer(dns.rcode.NOERROR, prefix_count, 1, prefix + self.soa(apex))
        rrs = [self.record(owner, rtype, rdata) for rdata in addresses]
        count = prefix_count + len(rrs)
        if len(rrs) == 1:
            return Answer(dns.rcode.NOERROR, count, 0, prefix + rrs[0])
        orders = min(len(rrs), MAX_ROTATIONS)
        starts = [i * len(rrs) // orders for i in range(orders)]
        return Rotation(
            [
                Answer(dns.rcode.NOERROR, count, 0, prefix + b"".join(rrs[s:] + rrs[:s]))
                for s in starts
            ]
        )

    # -- The table -----------------------------------------------------------------

    def add_table(self, table: MeshTable) -> None:
        settings = self.settings
        entries = table.entries
        # Which entry each name belongs to: primary hosts first, so a derived
        # short name or alt host never hides another entry's own name.
        owners: dict[str, HostEntry] = {}
        everywhere = self.everywhere
        for host, entry in entries.items():
            if everywhere or self.zones.through(host):
                owners[host] = entry
        for entry in entries.values():
            for name in names_of(entry, settings.domain, settings.namespace)[1:]:
                if name not in owners and (everywhere or self.zones.through(name)):
                    owners[name] = entry
        families: dict[int, tuple[list[bytes], list[bytes]]] = {}
        cnames: list[tuple[str, HostEntry]] = []
        # Address answers do not depend on the name asked, so all names of an
        # entry share them; NODATA answers depend on the name's zone (its SOA).
        shared: dict[int, tuple[Answer | Rotation | None, Answer | Rotation | None]] = {}
        ptr: dict[str, list[str]] = {}
        answers, known = self.answers, self.known
        type_a, type_aaaa = _TYPE_CLASS[TYPE_A], _TYPE_CLASS[TYPE_AAAA]
        wire_of = self.wire
        for name, entry in owners.items():
            wire = wire_of(name)
            if entry.cname:
                cnames.append((name, entry))
                continue
            pair = shared.get(id(entry))
            if pair is None:
                v4, v6 = families[id(entry)] = _split(entry.addresses)
                pair = shared[id(entry)] = (
                    self.address_answer(_POINTER_TO_QUESTION, v4, TYPE_A, b"", 0, ".")
                    if v4
                    else None,
                    self.address_answer(_POINTER_TO_QUESTION, v6, TYPE_AAAA, b"", 0, ".")
                    if v6
                    else None,
                )
                if name[0] == "*":
                    self.wildcards = True
                elif name == entry.host:
                    for address in entry.addresses:
                        ptr.setdefault(reverse_name(address), []).append(name)
            nodata = self.nodata(name)
            answers[wire + type_a] = pair[0] or nodata
            answers[wire + type_aaaa] = pair[1] or nodata
            known[wire] = nodata
        for name, entry in cnames:
            self.add_cname(name, entry, owners, families)
        for rev, hosts in ptr.items():
            wire = wire_of(rev)
            rrs = b"".join(
                self.record(_POINTER_TO_QUESTION, TYPE_PTR, wire_of(h))
                for h in dict.fromkeys(hosts)
            )
            self.answers[wire + _TYPE_CLASS[TYPE_PTR]] = Answer(
                dns.rcode.NOERROR, len(dict.fromkeys(hosts)), 0, rrs
            )
            self.known.setdefault(wire, self.nodata(rev))
        self.add_ancestors()

    def add_cname(
        self,
        name: str,
        entry: HostEntry,
        owners: dict[str, HostEntry],
        families: dict[int, tuple[list[bytes], list[bytes]]],
    ) -> None:
        """An ExternalName: the CNAME, and A/AAAA through the chain when it ends here."""
        wire = name_wire(name)
        self.answers[wire + _TYPE_CLASS[TYPE_CNAME]] = Answer(
            dns.rcode.NOERROR,
            1,
            0,
            self.record(_POINTER_TO_QUESTION, TYPE_CNAME, name_wire(entry.cname)),
        )
        chain: list[tuple[str | None, str]] = [(None, entry.cname)]
        seen = {name}
        target_entry: HostEntry | None = None
        target = entry.cname
        while len(chain) <= MAX_CNAME_CHAIN:
            found = owners.get(target) or self._wildcard_owner(target, owners)
            if found is None or target in seen:
                break
            seen.add(target)
            if not found.cname:
                target_entry = found
                break
            chain.append((target, found.cname))
            target = found.cname
        if target_entry is None:
            self.known[wire] = Chase(tuple(chain), target, self.settings.ttl)
            return
        prefix = b"".join(
            self.record(
                _POINTER_TO_QUESTION if owner is None else name_wire(owner),
                TYPE_CNAME,
                name_wire(to),
            )
            for owner, to in chain
        )
        split = families.get(id(target_entry)) or _split(target_entry.addresses)
        target_wire = name_wire(target)
        for rtype, addresses in ((TYPE_A, split[0]), (TYPE_AAAA, split[1])):
            self.answers[wire + _TYPE_CLASS[rtype]] = self.address_answer(
                target_wire, addresses, rtype, prefix, len(chain), self.apex_of(target)
            )
        self.known[wire] = Chase(tuple(chain), target, self.settings.ttl)

    def _wildcard_owner(self, name: str, owners: dict[str, HostEntry]) -> HostEntry | None:
        rest = name
        while "." in rest.rstrip("."):
            rest = rest.partition(".")[2]
            found = owners.get("*." + rest)
            if found is not None:
                return found
        return None

    def add_ancestors(self) -> None:
        """Names above table names exist too (empty non-terminals): NODATA, never NXDOMAIN.

        Answering NXDOMAIN for ``svc.cluster.local.`` would tell resolvers that
        follow RFC 8020 that nothing exists below it.
        """
        for wire in list(self.known):
            pos = 0
            while wire[pos]:
                pos += wire[pos] + 1
                parent = wire[pos:]
                if parent in self.known:
                    break
                text = name_to_text(parent)
                if not (self.everywhere or self.zones.through(text)):
                    break
                self.known[parent] = self.empty(self.apex_of(text))


def _split(addresses: Iterable[str]) -> tuple[list[bytes], list[bytes]]:
    """Packed IPv4 and IPv6 addresses (canonical text in), each list in source order."""
    v4: list[bytes] = []
    v6: list[bytes] = []
    for address in addresses:
        if ":" in address:
            v6.append(socket.inet_pton(socket.AF_INET6, address))
        else:
            v4.append(socket.inet_pton(socket.AF_INET, address))
    return v4, v6
