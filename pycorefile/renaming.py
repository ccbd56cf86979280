"""Asking the rest of the chain another name, and giving the client the reply under its own.

A plugin that rewrites names (the *rename* example, a *rewrite* plugin) asks
the plugins after it a question under another name and must hand the client
the reply to the question it asked: the question as the client spelled it,
and the names of the records under the new name put back under the old one.
This module does that for the common case, a suffix swap (``FROM`` to
``TO``), on every path:

- ``SuffixRename`` says which names are renamed and how, both ways, on wire
  names (no dnspython for a name that is not renamed).
- ``ask_renamed(next, request, rename)`` is the whole step of a wrapper: the
  renamed copy of the request is asked of ``next``, the reply (now, or after
  a wait) is renamed back, and whoever answered the copy is credited in the
  metrics (a renamed cache hit counts under ``plugin="cache"``).
- ``rename_reply`` renames a reply back: on its wire bytes when it has the
  usual shape (``rename_wire``, about ten times cheaper), else on the parsed
  message (``rename_message``). Both give the same answer.

Nothing here does I/O.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset

from ._contract import then
from ._request import Handler, Request
from ._types import Reply, Result
from ._wire import HEADER_LEN, WireError, name_labels
from .response import records

__all__ = [
    "NAME_FIELDS",
    "SuffixRename",
    "ask_renamed",
    "rename_message",
    "rename_reply",
    "rename_wire",
]

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


NAME_FIELDS = {
    dns.rdatatype.NS: ("target",),
    dns.rdatatype.CNAME: ("target",),
    dns.rdatatype.PTR: ("target",),
    dns.rdatatype.MX: ("exchange",),
    dns.rdatatype.SOA: ("mname", "rname"),
}
"""The names in a record's data that are renamed back (those the wire may compress)."""


def rename_message(
    msg: dns.message.Message, rename: SuffixRename, asked: dns.name.Name, renamed: dns.name.Name
) -> dns.message.Message:
    """The reply to ``renamed`` turned into the reply to ``asked``, changed in place.

    The question, every owner name and every name of ``NAME_FIELDS`` in record
    data that is under the target go back under the source; the renamed
    question itself becomes ``asked`` exactly, letter case included. Other
    names stay as they are.
    """

    def back(name: dns.name.Name) -> dns.name.Name:
        return asked if name == renamed else rename.back(name)

    msg.question = [_renamed(rrset, back) for rrset in msg.question]
    msg.answer = [_renamed(rrset, back) for rrset in msg.answer]
    msg.authority = [_renamed(rrset, back) for rrset in msg.authority]
    msg.additional = [_renamed(rrset, back) for rrset in msg.additional]
    return msg


def _renamed(
    rrset: dns.rrset.RRset, back: Callable[[dns.name.Name], dns.name.Name]
) -> dns.rrset.RRset:
    out = dns.rrset.RRset(back(rrset.name), rrset.rdclass, rrset.rdtype, rrset.covers)
    out.update_ttl(rrset.ttl)
    fields = NAME_FIELDS.get(rrset.rdtype, ())
    for rdata in rrset:
        if fields:
            rdata = rdata.replace(**{field: back(getattr(rdata, field)) for field in fields})
        out.add(rdata)
    return out


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
    for _section, rtype, _class, _ttl, name_at, data, data_end in records(reply, end):
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
