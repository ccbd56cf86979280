"""Name rewriting of queries and replies: for plugins that ask the rest of the chain another
question than the client's (*rewrite*, the *rename* example).

Such a plugin gives the client its reply under the question it asked: the
question put back, and owner names and the names in record data mapped back.
Nothing here does I/O.

For the common case, a suffix swap (``FROM`` to ``TO``), on every path:

- ``SuffixRename`` says which names are renamed and how, both ways, on wire
  names (no dnspython for a name that is not renamed).
- ``ask_renamed(next, request, rename)`` is the whole step of a wrapper: the
  renamed copy of the request is asked of ``next``, the reply (now, or after
  a wait) is renamed back, and whoever answered the copy is credited in the
  metrics (a renamed cache hit counts under ``plugin="cache"``).
- ``rename_reply`` renames a reply back: on its wire bytes when it has the
  usual shape (``rename_wire``, about ten times cheaper), else on the parsed
  message (``rename_message``). Both give the same answer.

For any mapping, on dnspython messages:

- ``Record`` is one resource record of a reply, with its section, owner, TTL
  and data, to change freely; ``records(msg)`` lists them (authority, answer,
  additional: the order CoreDNS's rewrite visits them) and
  ``set_records(msg, records)`` puts them back, records of one owner, class
  and type that follow each other forming one RRset again.
- ``map_names(msg, owner=..., value=...)`` maps every owner name and every
  name in the data of the types in ``NAME_FIELDS``.
- ``restore_question(msg, name, rdtype, rdclass)`` puts the client's question back.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property

import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from ._contract import then
from ._request import Handler, Request
from ._types import Reply, Result
from ._wire import HEADER_LEN, WireError, name_labels
from .response import ADDITIONAL, ANSWER, AUTHORITY
from .response import records as wire_records

__all__ = [
    "ADDITIONAL",
    "ANSWER",
    "AUTHORITY",
    "COMPRESSIBLE_NAME_FIELDS",
    "NAME_FIELDS",
    "Record",
    "SuffixRename",
    "ask_renamed",
    "map_names",
    "records",
    "rename_message",
    "rename_reply",
    "rename_wire",
    "restore_question",
    "set_records",
]

NAME_FIELDS: Mapping[int, tuple[str, ...]] = {
    dns.rdatatype.CNAME: ("target",),
    dns.rdatatype.DNAME: ("target",),
    dns.rdatatype.NS: ("target",),
    dns.rdatatype.PTR: ("target",),
    dns.rdatatype.MX: ("exchange",),
    dns.rdatatype.SRV: ("target",),
    dns.rdatatype.NAPTR: ("replacement",),
    dns.rdatatype.SOA: ("mname",),
}
"""The name in a record's data that CoreDNS's rewrite maps (``answer value``): one per type
(the SOA's primary server, not its mailbox)."""

NameMap = Callable[[dns.name.Name], dns.name.Name]


@dataclass
class Record:
    """One resource record of a message; change its fields and ``set_records`` it back."""

    section: int
    name: dns.name.Name
    ttl: int
    rdata: dns.rdata.Rdata

    @property
    def rdtype(self) -> int:
        return int(self.rdata.rdtype)


def records(msg: dns.message.Message) -> list[Record]:
    """Every record of the authority, answer and additional sections, in that order (the
    OPT record is not one of them)."""
    out: list[Record] = []
    for section, rrsets in (
        (AUTHORITY, msg.authority),
        (ANSWER, msg.answer),
        (ADDITIONAL, msg.additional),
    ):
        for rrset in rrsets:
            out.extend(Record(section, rrset.name, rrset.ttl, rdata) for rdata in rrset)
    return out


def set_records(msg: dns.message.Message, new: Iterable[Record]) -> dns.message.Message:
    """Replace the sections' records with ``new`` (in their order; each into its section)."""
    sections: dict[int, list[dns.rrset.RRset]] = {ANSWER: [], AUTHORITY: [], ADDITIONAL: []}
    for record in new:
        rrsets = sections[record.section]
        rdata = record.rdata
        last = rrsets[-1] if rrsets else None
        if (
            last is None
            or last.name != record.name
            or last.rdtype != rdata.rdtype
            or last.rdclass != rdata.rdclass
            or last.ttl != record.ttl
        ):
            last = dns.rrset.RRset(record.name, rdata.rdclass, rdata.rdtype)
            rrsets.append(last)
        last.add(rdata, record.ttl)
    msg.answer, msg.authority, msg.additional = (
        sections[ANSWER],
        sections[AUTHORITY],
        sections[ADDITIONAL],
    )
    return msg


def value_name(
    rdata: dns.rdata.Rdata, fields: Mapping[int, tuple[str, ...]] = NAME_FIELDS
) -> dns.name.Name | None:
    """The (first) name in a record's data that ``fields`` lists, or None."""
    names = fields.get(rdata.rdtype, ())
    return getattr(rdata, names[0]) if names else None


def map_names(
    msg: dns.message.Message,
    owner: NameMap | None = None,
    value: NameMap | None = None,
    fields: Mapping[int, tuple[str, ...]] = NAME_FIELDS,
) -> dns.message.Message:
    """Every owner name through ``owner`` and every name of ``fields`` in record data through
    ``value`` (None leaves them), in place; the question is not changed."""
    changed = []
    for record in records(msg):
        if owner is not None:
            record.name = owner(record.name)
        names = fields.get(record.rdtype, ()) if value is not None else ()
        if names:
            assert value is not None
            record.rdata = record.rdata.replace(
                **{field: value(getattr(record.rdata, field)) for field in names}
            )
        changed.append(record)
    return set_records(msg, changed)


def restore_question(
    msg: dns.message.Message, name: dns.name.Name, rdtype: int, rdclass: int
) -> dns.message.Message:
    """The message's question made ``name`` (letter case as given), ``rdtype``, ``rdclass``."""
    msg.question = [
        dns.rrset.RRset(
            name, dns.rdataclass.RdataClass.make(rdclass), dns.rdatatype.RdataType.make(rdtype)
        )
    ]
    return msg


# -- Renaming by suffix, on every path ---------------------------------------------------

_U16 = struct.Struct(">H")


@dataclass(frozen=True)
class SuffixRename:
    """Names at or under ``source`` are asked as the same names under ``target``.

    Both are absolute, lowercase (``canonicalize()``) dnspython names.
    """

    source: dns.name.Name
    target: dns.name.Name

    @cached_property
    def source_wire(self) -> bytes:
        """``source`` in wire form (lowercase)."""
        return self.source.to_wire() or b""

    @cached_property
    def target_wire(self) -> bytes:
        """``target`` in wire form (lowercase)."""
        return self.target.to_wire() or b""

    @cached_property
    def target_labels(self) -> list[bytes]:
        """``target``'s labels in wire form (length byte included), the root's excluded."""
        name = self.target_wire
        return [name[start:end] for start, end in itertools.pairwise(name_labels(name))]

    def covers(self, name_wire: bytes) -> bool:
        """True for a lowercased wire name at or under ``source`` (compared as bytes).

        ``request.qname_wire.lower()`` is the question in this form: no
        dnspython, no text, so a name that is not renamed costs next to nothing.
        """
        suffix = self.source_wire
        if not name_wire.endswith(suffix):  # most names stop here
            return False
        start, pos = len(name_wire) - len(suffix), 0
        while pos < start:  # the suffix must begin at a label, not inside one
            pos += name_wire[pos] + 1
        return pos == start

    def forward(self, name_wire: bytes) -> bytes | None:
        """A wire name covered by ``source``, under ``target`` instead (its other labels as
        they are, letter case included); None when that would be longer than 255 bytes."""
        renamed = name_wire[: len(name_wire) - len(self.source_wire)] + self.target_wire
        return renamed if len(renamed) <= 255 else None

    def back(self, name: dns.name.Name) -> dns.name.Name:
        """A reply's name under ``target``, back under ``source`` (other names as they are)."""
        if not name.is_subdomain(self.target):
            return name
        try:
            return name.relativize(self.target).derelativize(self.source)
        except dns.name.NameTooLong:
            return name  # cannot be said under source: left as the rest of the chain said it


def ask_renamed(next: Handler, request: Request, rename: SuffixRename) -> Result:
    """Ask ``next`` the request's question renamed by ``rename``; the reply renamed back.

    The caller has checked ``rename.covers(request.qname_wire.lower())``. A
    name that would grow past 255 bytes is answered YXDOMAIN, as a DNAME whose
    result is too long. A failure of the rest of the chain goes through
    untouched. Whoever answered the renamed copy is credited with the reply
    (``answered_by``), when it answers now and again once a wait is over.
    """
    asked = request.qname_wire
    new_name = rename.forward(asked)
    if new_name is None:
        return request.error(dns.rcode.YXDOMAIN)
    renamed = request.derive(new_name)
    result = next.handle(renamed)
    _credit(request, renamed)

    def back(reply: Reply) -> Reply:
        _credit(request, renamed)  # again: a plugin may credit another once its wait is over
        return rename_reply(reply, rename, request, renamed)

    return then(result, back)


def _credit(request: Request, renamed: Request) -> None:
    if renamed.answered_by:
        request.answered_by = renamed.answered_by


def rename_reply(reply: Reply, rename: SuffixRename, asked: Request, renamed: Request) -> Reply:
    """The reply to ``renamed`` (a copy of ``asked`` under the new name) as the reply to ``asked``.

    Bytes of the usual shape are renamed as bytes; other bytes are parsed
    into a Message of our own; a Message that comes back is ours to change
    (its producer keeps no reference) and is renamed in place. An empty reply
    (``DROP``) stays empty.
    """
    if isinstance(reply, bytes):
        if not reply:
            return reply
        wire = rename_wire(reply, rename, asked.qname_wire, renamed.qname_wire)
        if wire is not None:
            return wire
        reply = dns.message.from_wire(reply)
    return rename_message(reply, rename, asked.qname, renamed.qname)


COMPRESSIBLE_NAME_FIELDS: Mapping[int, tuple[str, ...]] = {
    dns.rdatatype.NS: ("target",),
    dns.rdatatype.CNAME: ("target",),
    dns.rdatatype.PTR: ("target",),
    dns.rdatatype.MX: ("exchange",),
    dns.rdatatype.SOA: ("mname", "rname"),
}
"""The names in record data that the wire may compress (RFC 3597 section 4): those
``rename_message`` maps back, as ``rename_wire`` does on the bytes."""


def rename_message(
    msg: dns.message.Message, rename: SuffixRename, asked: dns.name.Name, renamed: dns.name.Name
) -> dns.message.Message:
    """The reply to ``renamed`` turned into the reply to ``asked``, changed in place.

    The question, every owner name and every name of ``COMPRESSIBLE_NAME_FIELDS``
    in record data that is under the target go back under the source; the
    renamed question itself becomes ``asked`` exactly, letter case included.
    Other names stay as they are.
    """

    def back(name: dns.name.Name) -> dns.name.Name:
        return asked if name == renamed else rename.back(name)

    msg.question = [
        dns.rrset.RRset(back(question.name), question.rdclass, question.rdtype)
        for question in msg.question
    ]
    return map_names(msg, owner=back, value=back, fields=COMPRESSIBLE_NAME_FIELDS)


# -- On the wire bytes -------------------------------------------------------------------

# Record types whose data holds compressible names (RFC 3597 section 4): where they are.
_NAMES_IN_DATA = {
    2: "name",  # NS
    5: "name",  # CNAME
    12: "name",  # PTR
    15: "mx",  # MX: preference, then the exchange
    6: "soa",  # SOA: two names, then five numbers
}
_OBSOLETE_COMPRESSIBLE = frozenset({3, 4, 7, 8, 9, 14})  # MD MF MB MG MR MINFO


class _Unusual(Exception):
    """This reply is not the usual shape: rename the parsed message instead."""


def rename_wire(reply: bytes, rename: SuffixRename, asked: bytes, renamed: bytes) -> bytes | None:
    """``reply`` (to the wire name ``renamed``) as the reply to ``asked``, or None.

    A reply to the renamed question names the question once, at offset 12,
    and its records usually point there (``c0 0c``) or at a label of it.
    Putting the asked name in place of the renamed one then changes no
    record: a pointer to a label of the question's prefix or to the start of
    the new suffix now reads as the same prefix under the old suffix, which
    is exactly the renaming back; a pointer past the question moves by the
    difference in length. Anything else (a name under the new suffix spelled
    out instead of pointing at the question, a pointer into the middle of the
    new suffix, an obsolete type whose names may be compressed, bytes that do
    not read) returns None: ``rename_message`` then does the same on the
    parsed message. ``asked`` and ``renamed`` are the questions' wire names as
    sent (``Request.qname_wire``).
    """
    try:
        return _rename_wire(reply, rename, asked, renamed)
    except (_Unusual, WireError, IndexError, struct.error):
        return None


def _rename_wire(reply: bytes, rename: SuffixRename, asked: bytes, renamed: bytes) -> bytes:
    question_end = HEADER_LEN + len(renamed)
    if reply[4:6] != b"\x00\x01" or reply[HEADER_LEN:question_end].lower() != renamed.lower():
        raise _Unusual
    target = rename.target_wire
    prefix = len(renamed) - len(target)
    if prefix < 0 or renamed[prefix:].lower() != target:
        raise _Unusual
    if asked[:prefix] != renamed[:prefix] or asked[prefix:].lower() != rename.source_wire:
        raise _Unusual  # ``renamed`` is not ``rename.forward(asked)``
    # Where a pointer into the question may land: a label of the prefix, or the suffix's start.
    landings = {HEADER_LEN + offset for offset in name_labels(renamed) if offset <= prefix}
    delta = len(asked) - len(renamed)
    pointers: dict[int, int] = {}  # position of each pointer in the reply -> its new target
    walk = _Names(reply, question_end, landings, rename.target_labels, pointers, delta)
    end = question_end + 4
    for _section, rtype, _class, _ttl, name_at, data, data_end in wire_records(reply, end):
        end = data_end
        walk.name(name_at)
        if rtype in _OBSOLETE_COMPRESSIBLE:
            raise _Unusual
        shape = _NAMES_IN_DATA.get(rtype)
        if shape == "name":
            names_end = walk.name(data)
        elif shape == "mx":
            names_end = walk.name(data + 2)
        elif shape == "soa":
            names_end = walk.name(walk.name(data)) + 20
        else:
            continue
        if names_end != end:
            raise _Unusual
    if end != len(reply):
        raise _Unusual
    out = bytearray(reply)
    for position, new_target in pointers.items():
        _U16.pack_into(out, position, 0xC000 | new_target)
    return bytes(out[:HEADER_LEN]) + asked + bytes(out[question_end:])


class _Names:
    """Reads the names of one reply, checking each and noting its pointers' new targets."""

    def __init__(
        self,
        reply: bytes,
        question_end: int,
        landings: set[int],
        target_labels: list[bytes],
        pointers: dict[int, int],
        delta: int,
    ) -> None:
        self.reply = reply
        self.question_end = question_end
        self.landings = landings
        self.target_labels = target_labels
        self.pointers = pointers
        self.delta = delta

    def name(self, offset: int) -> int:
        """Check the name at ``offset``, note its pointer; return where its own bytes end."""
        reply = self.reply
        labels: list[bytes] = []
        own_end = 0
        position = limit = offset
        while True:
            length = reply[position]
            if length == 0:
                if not own_end:
                    own_end = position + 1
                break
            if length & 0xC0 != 0xC0:
                if length & 0xC0:
                    raise _Unusual  # an extended label type
                labels.append(reply[position : position + 1 + length].lower())
                position += 1 + length
                continue
            pointer = _U16.unpack_from(reply, position)[0] & 0x3FFF
            if pointer >= limit:
                raise _Unusual  # each pointer goes further back than the last (no loops)
            limit = pointer
            if not own_end:
                own_end = position + 2
                self.pointers[position] = self._moved(pointer)
            elif position not in self.pointers:
                raise _Unusual  # a pointer in bytes that were not read as a name
            if pointer < self.question_end:
                return own_end  # reaches the question where renaming back is exact
            position = pointer
        # Spelled out (or through earlier records) without reaching the question: it must
        # not be under the new suffix, or it would stay renamed.
        suffix = self.target_labels
        if len(labels) >= len(suffix) and labels[len(labels) - len(suffix) :] == suffix:
            raise _Unusual
        return own_end

    def _moved(self, pointer: int) -> int:
        """Where a pointer must point once the asked name replaces the renamed one."""
        if pointer < self.question_end:
            if pointer not in self.landings:
                raise _Unusual  # the header, or the middle of the new suffix
            return pointer
        if pointer < self.question_end + 4:
            raise _Unusual  # the question's type and class are no name
        moved = pointer + self.delta
        if moved >= 0x4000:
            raise _Unusual
        return moved
