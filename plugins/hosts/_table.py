"""The hosts table: the file's and the inline entries turned into prepared wire answers.

Built once per (re)load, off the event loop; a query is then a dictionary
lookup on its lowercased question bytes (``Request.key``) and a splice of the
stored records behind the client's own header and question
(``PreparedReply.spliced``: every record names its owner by a pointer to the
question, so one answer fits any letter case and any name of a wildcard).

CoreDNS's lookup rules, decided here once per name instead of per query: for
each family, a source (the file, then the inline lines) gives the addresses
of the exact name if it has that name in that family, else those of the
wildcard one label up (``*.`` + the name less its first label); the file's
come first. A name with addresses in some family exists: the other family
and other types get NODATA (AA, no SOA).
"""

from __future__ import annotations

import socket
import struct

import dns.name
import dns.rcode

from pycorefile.wire import FLAG_AA, FLAG_QR, PreparedReply
from pycorefile.zones import reverse_name

from ._parse import HostsMap

TYPE_A = 1
TYPE_PTR = 12
TYPE_AAAA = 28
CLASS_IN = 1
_POINTER_TO_QUESTION = b"\xc0\x0c"
_FLAGS = FLAG_QR | FLAG_AA
"""QR and AA, as CoreDNS's hosts (no RA: Go's SetReply never sets it); RD and CD are the query's."""
_TYPE_CLASS = {
    rtype: struct.pack(">HH", rtype, CLASS_IN) for rtype in (TYPE_A, TYPE_AAAA, TYPE_PTR)
}


def name_wire(name: str) -> bytes:
    """The wire form of a lowercased FQDN (what ``Request.key`` starts with)."""
    wire = dns.name.from_text(name).to_wire()
    assert wire is not None
    return wire


class HostsTable:
    """Prepared answers of one load: A/AAAA/PTR by question, NODATA by name."""

    __slots__ = (
        "answers", "entries", "known", "ptr", "shapes", "wild_answers", "wild_known",
    )  # fmt: skip

    def __init__(self, file: HostsMap, inline: HostsMap, ttl: int) -> None:
        self.entries = len(file) + len(inline)
        ttl_bytes = struct.pack(">I", ttl)
        nodata = PreparedReply.spliced(_FLAGS | dns.rcode.NOERROR, 0, 0, b"")

        def answer(rtype: int, rdatas: list[bytes]) -> PreparedReply:
            if not rdatas:
                return nodata
            head = _POINTER_TO_QUESTION + _TYPE_CLASS[rtype] + ttl_bytes
            records = b"".join(head + struct.pack(">H", len(r)) + r for r in rdatas)
            return PreparedReply.spliced(_FLAGS, len(rdatas), 0, records)

        def packed(addresses: list[str], family: int) -> list[bytes]:
            return [socket.inet_pton(family, a) for a in addresses]

        self.answers: dict[bytes, PreparedReply] = {}
        """Name wire + type + class (A, AAAA) -> reply, for every exact name."""
        self.known: dict[bytes, PreparedReply] = {}
        """Name wire -> NODATA, for every exact name (other types)."""
        self.wild_answers: dict[bytes, PreparedReply] = {}
        """The same for wildcard names (``\\x01*`` + parent), for names not known exactly."""
        self.wild_known: dict[bytes, PreparedReply] = {}
        self.ptr: dict[bytes, PreparedReply] = {}
        """Reverse name wire -> PTR reply."""
        self.shapes: dict[str, tuple[tuple[str, ...], ...]] = {}
        """Name (exact, ``*.`` wildcard, or reverse) -> what it answers, to compare loads."""

        exact = {
            **dict.fromkeys(file.name4), **dict.fromkeys(file.name6),
            **dict.fromkeys(inline.name4), **dict.fromkeys(inline.name6),
        }  # fmt: skip
        for name in exact:
            v4 = _lookup(file.name4, file.wild4, name) + _lookup(inline.name4, inline.wild4, name)
            v6 = _lookup(file.name6, file.wild6, name) + _lookup(inline.name6, inline.wild6, name)
            wire = name_wire(name)
            self.answers[wire + _TYPE_CLASS[TYPE_A]] = answer(TYPE_A, packed(v4, socket.AF_INET))
            self.answers[wire + _TYPE_CLASS[TYPE_AAAA]] = answer(
                TYPE_AAAA, packed(v6, socket.AF_INET6)
            )
            self.known[wire] = nodata
            self.shapes[name] = (tuple(v4), tuple(v6))
        wild = {
            **dict.fromkeys(file.wild4), **dict.fromkeys(file.wild6),
            **dict.fromkeys(inline.wild4), **dict.fromkeys(inline.wild6),
        }  # fmt: skip
        for name in wild:
            v4 = file.wild4.get(name, []) + inline.wild4.get(name, [])
            v6 = file.wild6.get(name, []) + inline.wild6.get(name, [])
            wire = name_wire(name)
            self.wild_answers[wire + _TYPE_CLASS[TYPE_A]] = answer(
                TYPE_A, packed(v4, socket.AF_INET)
            )
            self.wild_answers[wire + _TYPE_CLASS[TYPE_AAAA]] = answer(
                TYPE_AAAA, packed(v6, socket.AF_INET6)
            )
            self.wild_known[wire] = nodata
            self.shapes[name] = (tuple(v4), tuple(v6))
        addresses = {**dict.fromkeys(file.reverse), **dict.fromkeys(inline.reverse)}
        for address in addresses:
            names = file.reverse.get(address, []) + inline.reverse.get(address, [])
            reverse = reverse_name(address)
            self.ptr[name_wire(reverse) + _TYPE_CLASS[TYPE_PTR]] = answer(
                TYPE_PTR, [name_wire(n) for n in names]
            )
            self.shapes[reverse] = (tuple(names),)

    def lookup(self, question: bytes, qtype: int) -> PreparedReply | None:
        """The reply for a question (name wire + type + class, lowercased) in the zones.

        A/AAAA: the addresses, or NODATA when the name has only the other family;
        any other type: NODATA for a known name; None for a name the table lacks
        (exactly or through a wildcard).
        """
        name = question[:-4]
        if name in self.known:
            if qtype in (TYPE_A, TYPE_AAAA):
                return self.answers.get(question)
            return self.known[name]
        if not self.wild_known or not name[0]:
            return None
        pattern = b"\x01*" + name[name[0] + 1 :]
        if pattern == b"\x01*\x00":
            return None  # a one-label name has no wildcard above it (not even ``*.``)
        if qtype in (TYPE_A, TYPE_AAAA):
            return self.wild_answers.get(pattern + question[-4:])
        return self.wild_known.get(pattern)


def changed_names(old: HostsTable, new: HostsTable) -> tuple[frozenset[str], frozenset[str]]:
    """What answers may differ between two tables: for ``DataChanges.announce``.

    The names (exact and reverse) whose answers differ, appear or vanish;
    and the parents of changed wildcards, under which every name may have
    changed. Pure and proportional to the tables: run it off the event loop.
    """
    names: set[str] = set()
    below: set[str] = set()
    for table, other in ((old, new), (new, old)):
        for name, shape in table.shapes.items():
            if other.shapes.get(name) != shape:
                if name.startswith("*."):
                    below.add(name[2:])
                else:
                    names.add(name)
    return frozenset(names), frozenset(below)


def _lookup(names: dict[str, list[str]], wild: dict[str, list[str]], name: str) -> list[str]:
    """One source's addresses of one family for ``name``: exact, else the wildcard above."""
    found = names.get(name)
    if found is not None:
        return found
    parent = name.partition(".")[2]
    if not parent:
        return []
    return wild.get("*." + parent, [])
