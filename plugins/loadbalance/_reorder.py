"""CoreDNS's round robin (and ``prefer``) on a reply: pure functions.

The order of each section is decided on the records' types alone
(``round_robin``), then, with ``prefer``, on their addresses
(``prefer_subnets``); ``reorder_wire`` applies it to a reply's bytes, moving
records without decoding them, and ``reorder_message`` to a dnspython
message. Moving a record's bytes is safe only when no compression pointer
of the message points into a record that changes place: ``reorder_wire``
checks that, and returns None when it is not so (or when a record's type may
hold compressed names it does not read), so the caller decodes the reply
instead. Upstream replies of addresses owned by the question name (or by a
CNAME's target) move on bytes.
"""

from __future__ import annotations

import ipaddress
import itertools
import random
import struct
from collections.abc import Callable, Sequence
from typing import Protocol

import dns.message
import dns.name
import dns.rdatatype
import dns.rrset

from pycorefile.wire import HEADER_LEN, MAX_TCP, TYPE_OPT, WireError

TYPE_A = 1
TYPE_AAAA = 28
TYPE_CNAME = 5
TYPE_MX = 15
_ADDRESSES = (TYPE_A, TYPE_AAAA)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Permutation = Callable[[int], Sequence[int]]
"""A random order of ``range(n)`` (``random_permutation``; tests pass their own)."""

_TABLED = 6
_PERMUTATIONS = [list(itertools.permutations(range(n))) for n in range(_TABLED + 1)]
"""Every order of up to six records: one draw picks one, uniformly."""
_random = random.random


def random_permutation(n: int) -> Sequence[int]:
    """A uniformly random order of ``range(n)`` (one draw for up to six records)."""
    if n <= _TABLED:
        table = _PERMUTATIONS[n]
        return table[int(_random() * len(table))]
    return random.sample(range(n), n)


_U16 = struct.Struct(">H")

# Types whose RDATA may hold compressed names (RFC 1035 and those servers
# compress anyway): the fixed bytes before each name. Their names are read for
# compression pointers.
_NAMES_IN_RDATA: dict[int, tuple[int, ...]] = {
    2: (0,), 3: (0,), 4: (0,), 5: (0,), 7: (0,), 8: (0,), 9: (0,), 12: (0,), 39: (0,),
    6: (0, 0), 14: (0, 0), 17: (0, 0),
    15: (2,), 18: (2,), 21: (2,), 36: (2,),
    26: (2, 0),
    33: (6,),
    46: (18,), 47: (0,), 64: (2,), 65: (2,),
}  # fmt: skip
# Types whose RDATA holds no name at all.
_NO_NAMES = frozenset({
    1, 10, 11, 13, 16, 28, 29, 41, 43, 44, 48, 50, 51, 52, 53, 59, 60, 61, 63, 99, 256, 257,
})  # fmt: skip


def round_robin(types: Sequence[int], permutation: Permutation = random_permutation) -> list[int]:
    """The new order (indexes) of one section's records of ``types``, as CoreDNS's.

    One record or none: unchanged. Only A, or only AAAA, records: shuffled.
    Else CNAMEs first (in their order), then the other types (in their order),
    then the A and AAAA records shuffled, then the MX records shuffled.
    """
    n = len(types)
    if n <= 1:
        return list(range(n))
    first = types[0]
    if first in _ADDRESSES and types.count(first) == n:
        return list(permutation(n))
    cnames, rest, addresses, mx = partition(types, range(n))
    return cnames + rest + _shuffled(addresses, permutation) + _shuffled(mx, permutation)


def _shuffled(items: list[int], permutation: Permutation) -> list[int]:
    if len(items) <= 1:
        return items
    return [items[i] for i in permutation(len(items))]


def prefer_subnets(
    order: Sequence[int],
    types: Sequence[int],
    addresses: Sequence[ipaddress.IPv4Address | ipaddress.IPv6Address | None],
    subnets: Sequence[Network],
) -> list[int]:
    """``order`` with addresses in ``subnets`` first, as CoreDNS's ``prefer``.

    CNAMEs, then the addresses of the first subnet, of the second, ..., then
    the other addresses (each group in the order given), then MX records,
    then the rest. ``types`` and ``addresses`` are by record index.
    """
    cnames, rest, found, mx = partition(types, order)
    preferred: list[int] = []
    taken: set[int] = set()
    for subnet in subnets:
        for index in found:
            address = addresses[index]
            if index not in taken and address is not None and address in subnet:
                preferred.append(index)
                taken.add(index)
    others = [index for index in found if index not in taken]
    return cnames + preferred + others + mx + rest


def partition(
    types: Sequence[int], order: Sequence[int]
) -> tuple[list[int], list[int], list[int], list[int]]:
    """``order`` split into CNAMEs, other types, addresses and MX records."""
    cnames: list[int] = []
    rest: list[int] = []
    addresses: list[int] = []
    mx: list[int] = []
    for index in order:
        rtype = types[index]
        if rtype == TYPE_CNAME:
            cnames.append(index)
        elif rtype in _ADDRESSES:
            addresses.append(index)
        elif rtype == TYPE_MX:
            mx.append(index)
        else:
            rest.append(index)
    return cnames, rest, addresses, mx


class Records(Protocol):
    """What a planner may read of a section's records, by index."""

    def rdata(self, index: int) -> bytes:
        """The record's RDATA (uncompressed for A and AAAA, which hold no names)."""

    def owner(self, index: int) -> str:
        """The record's owner name as written in the reply (``www.Example.org.``)."""


Planner = Callable[[int, Sequence[int], Records], list[int]]
"""The new order of one section: given its index (0 answer, 1 authority, 2
additional), its records' types, and the records themselves."""


def address_of(rtype: int, rdata: bytes) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """The address of an A or AAAA record's RDATA, else None."""
    if rtype == TYPE_A and len(rdata) == 4:
        return ipaddress.IPv4Address(rdata)
    if rtype == TYPE_AAAA and len(rdata) == 16:
        return ipaddress.IPv6Address(rdata)
    return None


def reorder_reply(wire: bytes, plan: Planner) -> bytes:
    """A reply with each section's records in the order ``plan`` gives, as CoreDNS's
    loadbalance: only a NOERROR reply to one question that is not AXFR or IXFR.

    The records are moved as bytes when that is safe (``reorder_wire``); else the
    reply is decoded once and rendered again.
    """
    layout = _layout(wire)
    if layout is _AS_IS:
        return wire
    if layout is not None:
        out = _reordered(wire, layout, plan)
        if out is not None:
            return out
    try:
        msg = dns.message.from_wire(wire, one_rr_per_rrset=True, ignore_trailing=True)
    except Exception:
        return wire  # not ours to judge: the reply goes out as it came
    return reorder_message(msg, plan).to_wire(max_size=MAX_TCP)


def reorder_wire(wire: bytes, plan: Planner) -> bytes | None:
    """``wire`` with each section's records in the order ``plan`` gives, moved as bytes.

    OPT records stay last in their section. Returns ``wire`` itself when no
    record moves (or the reply is not one to reorder), and None when the
    records cannot be moved as bytes (a compression pointer into a record that
    moves, a type whose names are not known, a message that cannot be read).
    """
    layout = _layout(wire)
    if layout is _AS_IS:
        return wire
    return None if layout is None else _reordered(wire, layout, plan)


def _reordered(wire: bytes, layout: _Layout, plan: Planner) -> bytes | None:
    pieces: list[bytes] = [wire[:2]]
    for part in layout:
        if isinstance(part, bytes):
            pieces.append(part)
            continue
        index, types, records, rdata_at, pinned, starts = part
        order = plan(index, types, _WireRecords(wire, records, rdata_at, starts))
        if pinned and not _stays(order, records, pinned):
            return None  # something points into a record that would move
        pieces += [records[i] for i in order]
    return b"".join(pieces)


class _WireRecords:
    """A group's records, read from the reply's bytes."""

    __slots__ = ("_rdata_at", "_records", "_starts", "_wire")

    def __init__(
        self, wire: bytes, records: list[bytes], rdata_at: list[int], starts: list[int]
    ) -> None:
        self._wire = wire
        self._records = records
        self._rdata_at = rdata_at
        self._starts = starts

    def rdata(self, index: int) -> bytes:
        return self._records[index][self._rdata_at[index] :]

    def owner(self, index: int) -> str:
        name: dns.name.Name = dns.name.from_wire(self._wire, self._starts[index])[0]
        return name.to_text()


def _stays(order: Sequence[int], records: Sequence[bytes], pinned: Sequence[bool]) -> bool:
    """True when no pinned record of a section changes place in ``order``."""
    old = 0
    starts = []
    for record in records:
        starts.append(old)
        old += len(record)
    position = 0
    for i in order:
        if pinned[i] and starts[i] != position:
            return False
        position += len(records[i])
    return True


_Group = tuple[int, list[int], list[bytes], list[int], list[bool], list[int]]
"""A section's records that may be reordered (all but OPT, two or more): the
section's index, their types, their bytes, where the RDATA starts in each,
whether a compression pointer points into each (those may not move; an empty
list when none is pinned), and where each starts in the reply."""
_Layout = list[bytes | _Group]
"""A reply after its ID: the bytes that stay as they are, and the groups to reorder."""
_AS_IS: _Layout = []
"""The layout of a reply that is not reordered (not NOERROR, AXFR, ...)."""

_LAYOUTS: dict[bytes, _Layout | None] = {}
_LAYOUTS_MAX = 4096
"""Layouts remembered by the reply's bytes after the ID (a cache hit repeats them)."""


def _layout(wire: bytes) -> _Layout | None:
    """The reply's layout after its ID, remembered; ``_AS_IS`` for a reply not to
    reorder; None when its records cannot be moved as bytes."""
    key = wire[2:]
    try:
        return _LAYOUTS[key]
    except KeyError:
        pass
    try:
        layout = _read_layout(wire) if shufflable(wire) else _AS_IS
    except (WireError, IndexError, struct.error):
        layout = None
    if len(_LAYOUTS) >= _LAYOUTS_MAX:
        _LAYOUTS.clear()
    _LAYOUTS[key] = layout
    return layout


def _read_layout(wire: bytes) -> _Layout | None:
    qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHH", wire, 4)
    targets: list[int] = []
    offset = HEADER_LEN
    for _ in range(qdcount):
        offset = _read_name(wire, offset, targets) + 4
    question_end = offset
    found: list[list[tuple[int, int, int, int]]] = []
    size = len(wire)
    for count in (ancount, nscount, arcount):
        records: list[tuple[int, int, int, int]] = []
        for _ in range(count):
            start = offset
            end = _read_name(wire, offset, targets)
            if end + 10 > size:
                raise WireError("record runs past the end of the message")
            rtype = _U16.unpack_from(wire, end)[0]
            rdata = end + 10
            offset = rdata + _U16.unpack_from(wire, end + 8)[0]
            if offset > size:
                raise WireError("record runs past the end of the message")
            names = _NAMES_IN_RDATA.get(rtype)
            if names is not None:
                at = rdata
                for skip in names:
                    at = _read_name(wire, at + skip, targets)
            elif rtype not in _NO_NAMES:
                return None
            records.append((start, offset, rtype, rdata))
        found.append(records)
    if offset != size:
        return None  # trailing bytes: leave such a message to the decoder
    layout: _Layout = []
    fixed = [wire[2:question_end]]
    for index, records in enumerate(found):
        kept = [r for r in records if r[2] != TYPE_OPT]
        if len(kept) < 2:
            fixed += [wire[s:e] for s, e, _t, _d in records]
            continue
        layout.append(b"".join(fixed))
        pinned = [any(s <= t < e for t in targets) for s, e, _t, _d in kept]
        layout.append((
            index,
            [r[2] for r in kept],
            [wire[s:e] for s, e, _t, _d in kept],
            [d - s for s, _e, _t, d in kept],
            pinned if any(pinned) else [],
            [s for s, _e, _t, _d in kept],
        ))  # fmt: skip
        fixed = [wire[s:e] for s, e, t, _d in records if t == TYPE_OPT]
    layout.append(b"".join(fixed))
    return layout


def _read_name(wire: bytes, offset: int, targets: list[int]) -> int:
    """The offset after the name at ``offset``; its compression pointer's target
    is added to ``targets``."""
    while True:
        length = wire[offset]
        if length == 0:
            return offset + 1
        if length & 0xC0 == 0xC0:
            targets.append(((length & 0x3F) << 8) | wire[offset + 1])
            return offset + 2
        if length > 63:
            raise WireError("invalid label type")
        offset += length + 1


def reorder_message(msg: dns.message.Message, plan: Planner) -> dns.message.Message:
    """``msg`` (changed in place) with each section's records in the order ``plan`` gives.

    Each record becomes an RRset of its own, so records of one RRset can be
    apart, as in CoreDNS's record lists.
    """
    for index, section in enumerate((msg.answer, msg.authority, msg.additional)):
        records = [
            dns.rrset.from_rdata_list(rrset.name, rrset.ttl, [rdata])
            for rrset in section
            for rdata in rrset
        ]
        if len(records) <= 1:
            continue
        order = plan(index, [rrset.rdtype for rrset in records], _MessageRecords(records))
        section[:] = [records[i] for i in order]
    return msg


class _MessageRecords:
    """A section's records, one per RRset, from a dnspython message."""

    __slots__ = ("_rrsets",)

    def __init__(self, rrsets: list[dns.rrset.RRset]) -> None:
        self._rrsets = rrsets

    def rdata(self, index: int) -> bytes:
        return _rdata_wire(self._rrsets[index])

    def owner(self, index: int) -> str:
        return self._rrsets[index].name.to_text()


def _rdata_wire(rrset: dns.rrset.RRset) -> bytes:
    """The RDATA of a one-record RRset, for addresses (others are not looked at)."""
    if rrset.rdtype in _ADDRESSES:
        data: bytes = rrset[0].to_digestable()
        return data
    return b""


def question_type(wire: bytes) -> int | None:
    """The type asked in a message's (first, uncompressed) question; None if unreadable."""
    try:
        offset = HEADER_LEN
        while wire[offset]:
            if wire[offset] & 0xC0:
                return None
            offset += wire[offset] + 1
        qtype: int = _U16.unpack_from(wire, offset + 1)[0]
    except (IndexError, struct.error):
        return None
    return qtype


def shufflable(wire: bytes) -> bool:
    """True for a reply CoreDNS's loadbalance reorders: NOERROR, one question, not AXFR/IXFR."""
    if len(wire) < HEADER_LEN or wire[3] & 0x0F or wire[4:6] != b"\x00\x01":
        return False
    qtype = question_type(wire)
    return qtype is not None and qtype not in (dns.rdatatype.AXFR, dns.rdatatype.IXFR)
