"""The reply renamed on its wire bytes, for the usual reply: no dnspython (no I/O either).

A reply to the renamed question names the question once, at offset 12, and
its records usually point there (``c0 0c``) or at a label of it. Putting the
asked name in place of the renamed one then changes no record: a pointer to a
label of the question's prefix or to the start of the new suffix now reads as
the same prefix under the old suffix, which is exactly the renaming back; a
pointer past the question moves by the difference in length. Anything else (a
name under the new suffix spelled out instead of pointing at the question, a
pointer into the middle of the new suffix, an obsolete type whose names may
be compressed, bytes that do not read) returns None, and the caller renames
the parsed message instead (``rename_reply``): same answer, dnspython's price.
"""

from __future__ import annotations

import struct

from .rules import Rule, label_offsets

_U16 = struct.Struct(">H")
_HEADER = 12

# Record types whose data holds compressible names (RFC 3597 section 4): where they are.
_NAMES_IN_DATA = {
    2: "name",  # NS
    5: "name",  # CNAME
    12: "name",  # PTR
    15: "mx",  # MX: preference, then the exchange
    6: "soa",  # SOA: two names, then five numbers
}
_OBSOLETE_COMPRESSIBLE = frozenset({3, 4, 7, 8, 9, 14})  # MD MF MB MG MR MINFO


class _Unsafe(Exception):
    """This reply is not the usual shape: rename the parsed message instead."""


def rename_wire(reply: bytes, rule: Rule, asked: bytes, renamed: bytes) -> bytes | None:
    """``reply`` (to the wire name ``renamed``) as the reply to ``asked``, or None.

    ``asked`` and ``renamed`` are the questions' wire names as sent
    (``Request.qname_wire``). None means the bytes are not the usual shape;
    ``rename_reply`` then does the same on the parsed message.
    """
    try:
        return _rename(reply, rule, asked, renamed)
    except (_Unsafe, IndexError, struct.error):
        return None


def _rename(reply: bytes, rule: Rule, asked: bytes, renamed: bytes) -> bytes:
    qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHH", reply, 4)
    question_end = _HEADER + len(renamed)
    if qdcount != 1 or reply[_HEADER:question_end].lower() != renamed.lower():
        raise _Unsafe
    target = rule.target_wire
    prefix = len(renamed) - len(target)
    if prefix < 0 or renamed[prefix:].lower() != target:
        raise _Unsafe
    if asked[:prefix] != renamed[:prefix] or asked[prefix:].lower() != rule.source_wire:
        raise _Unsafe  # ``renamed`` is not ``rule.forward(asked)``
    # Where a pointer into the question may land: a label of the prefix, or the suffix's start.
    landings = {_HEADER + offset for offset in label_offsets(renamed) if offset <= prefix}
    delta = len(asked) - len(renamed)
    pointers: dict[int, int] = {}  # position of each pointer in the reply -> its new target
    walk = _Walk(reply, question_end, landings, rule.target_labels, pointers, delta)
    offset = question_end + 4
    for _ in range(ancount + nscount + arcount):
        offset = walk.name(offset)
        rtype, _class, _ttl, length = struct.unpack_from(">HHIH", reply, offset)
        data, offset = offset + 10, offset + 10 + length
        if offset > len(reply):
            raise _Unsafe
        if rtype in _OBSOLETE_COMPRESSIBLE:
            raise _Unsafe
        shape = _NAMES_IN_DATA.get(rtype)
        if shape == "name":
            end = walk.name(data)
        elif shape == "mx":
            end = walk.name(data + 2)
        elif shape == "soa":
            end = walk.name(walk.name(data)) + 20
        else:
            continue
        if end != offset:
            raise _Unsafe
    if offset != len(reply):
        raise _Unsafe
    out = bytearray(reply)
    for position, new_target in pointers.items():
        _U16.pack_into(out, position, 0xC000 | new_target)
    return bytes(out[:_HEADER]) + asked + bytes(out[question_end:])


class _Walk:
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
                    raise _Unsafe  # an extended label type
                labels.append(reply[position : position + 1 + length].lower())
                position += 1 + length
                continue
            pointer = _U16.unpack_from(reply, position)[0] & 0x3FFF
            if pointer >= limit:
                raise _Unsafe  # each pointer goes further back than the last (no loops)
            limit = pointer
            if not own_end:
                own_end = position + 2
                self.pointers[position] = self._moved(pointer)
            elif position not in self.pointers:
                raise _Unsafe  # a pointer in bytes that were not read as a name
            if pointer < self.question_end:
                return own_end  # reaches the question where renaming back is exact
            position = pointer
        # Spelled out (or through earlier records) without reaching the question: it must
        # not be under the new suffix, or it would stay renamed.
        suffix = self.target_labels
        if len(labels) >= len(suffix) and labels[len(labels) - len(suffix) :] == suffix:
            raise _Unsafe
        return own_end

    def _moved(self, pointer: int) -> int:
        """Where a pointer must point once the asked name replaces the renamed one."""
        if pointer < self.question_end:
            if pointer not in self.landings:
                raise _Unsafe  # the header, or the middle of the new suffix
            return pointer
        if pointer < self.question_end + 4:
            raise _Unsafe  # the question's type and class are no name
        moved = pointer + self.delta
        if moved >= 0x4000:
            raise _Unsafe
        return moved
