"""Sans-IO wire helpers: the byte-level fast path of the server.

Everything here is a plain function over ``bytes``: reading the header and
question of a query without dnspython, building error replies, sizing replies
for the client, and *prepared replies* -- answers stored as wire bytes that are
sent again with only the ID, flags, question casing and TTLs patched. dnspython
is used only where a message really has to be parsed or rebuilt (truncation of
an oversize reply, preparing an answer once).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import dns.exception
import dns.message
import dns.rcode

HEADER_LEN = 12
OUR_PAYLOAD = 1232
"""The EDNS payload we advertise and the default cap on UDP replies (DNS Flag Day 2020)."""
MAX_TCP = 65535
TYPE_OPT = 41

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_HEADER = struct.Struct(">HHHHHH")
_OPT_NO_DO = b"\x00\x00\x29" + _U16.pack(OUR_PAYLOAD) + b"\x00\x00\x00\x00\x00\x00"
_OPT_DO = b"\x00\x00\x29" + _U16.pack(OUR_PAYLOAD) + b"\x00\x00\x80\x00\x00\x00"
_join = b"".join

# Header flag bits (the 16-bit flags word).
FLAG_QR = 0x8000
FLAG_AA = 0x0400
FLAG_TC = 0x0200
FLAG_RD = 0x0100
FLAG_RA = 0x0080
FLAG_AD = 0x0020
FLAG_CD = 0x0010


class WireError(ValueError):
    """The packet cannot be read far enough to answer it."""


QueryFields = tuple[int, int, int, int, int, int, int, bool, int, int, bool, bool]


class QueryInfo:
    """What the fast path needs from a query, read straight from its bytes.

    ``name_end`` is the offset just past the question name (the name is
    ``wire[12:name_end]``); ``simple`` is True when the packet is exactly one
    question plus at most one OPT record.
    """

    __slots__ = (
        "do", "edns", "edns_payload", "edns_version", "flags", "id", "name_end", "opcode",
        "qclass", "qdcount", "qtype", "simple",
    )  # fmt: skip

    def __init__(self, wire: bytes) -> None:
        (
            self.id, self.flags, self.opcode, self.qdcount, self.name_end, self.qtype,
            self.qclass, self.edns, self.edns_payload, self.edns_version, self.do, self.simple,
        ) = parse_query(wire)  # fmt: skip


def read_query(wire: bytes) -> QueryInfo:
    """Read the header, question and EDNS record of a query (see ``parse_query``)."""
    return QueryInfo(wire)


def parse_query(wire: bytes) -> QueryFields:
    """The fields of ``QueryInfo``, in slot order of its constructor.

    Raises WireError when the packet is shorter than a header (drop it) and
    ``QuestionError`` when the header is readable but the question is not
    (answer FORMERR). This runs for every packet, so it is written for speed.
    """
    n = len(wire)
    if n < HEADER_LEN:
        raise WireError("packet shorter than a DNS header")
    qid, flags, qdcount, ancount, nscount, arcount = _HEADER.unpack_from(wire)
    opcode = (flags >> 11) & 0xF
    if qdcount == 0:
        return (qid, flags, opcode, 0, HEADER_LEN, 0, 0, False, 512, 0, False, False)
    # The question name, uncompressed, at most 255 bytes.
    end = HEADER_LEN
    while True:
        if end >= n:
            raise QuestionError("question name runs past the end of the packet")
        length = wire[end]
        if length == 0:
            end += 1
            break
        if length > 63:
            raise QuestionError("compressed or invalid label in the question")
        end += length + 1
    if end - HEADER_LEN > 255:
        raise QuestionError("question name longer than 255 bytes")
    after = end + 4
    if after > n:
        raise QuestionError("question runs past the end of the packet")
    qtype = (wire[end] << 8) | wire[end + 1]
    qclass = (wire[end + 2] << 8) | wire[end + 3]
    if qdcount != 1 or ancount or nscount or arcount > 1:
        return (qid, flags, opcode, qdcount, end, qtype, qclass, False, 512, 0, False, False)
    if arcount == 0:
        return (qid, flags, opcode, 1, end, qtype, qclass, False, 512, 0, False, after == n)
    # The common EDNS case: one OPT record for the root name, last in the packet.
    if after + 11 <= n and wire[after] == 0 and wire[after + 1] == 0 and wire[after + 2] == 41:
        payload = (wire[after + 3] << 8) | wire[after + 4]
        rdlen = (wire[after + 9] << 8) | wire[after + 10]
        return (
            qid, flags, opcode, 1, end, qtype, qclass, True,
            payload if payload > 512 else 512,
            wire[after + 6],
            bool(wire[after + 7] & 0x80),
            after + 11 + rdlen == n,
        )  # fmt: skip
    return (qid, flags, opcode, 1, end, qtype, qclass, False, 512, 0, False, False)


class QuestionError(WireError):
    """The header is readable but the question is not: answer FORMERR."""


def skip_name(wire: bytes, offset: int) -> int:
    """Return the offset after a possibly compressed name in a message."""
    try:
        while True:
            length = wire[offset]
            if length == 0:
                return offset + 1
            if length >= 0xC0:
                return offset + 2
            if length > 63:
                raise WireError("invalid label type")
            offset += length + 1
    except IndexError:
        raise WireError("name runs past the end of the message") from None


def name_labels(name_wire: bytes) -> list[int]:
    """Offsets of each label start in an uncompressed wire name, root included."""
    offsets = []
    pos = 0
    while True:
        offsets.append(pos)
        length = name_wire[pos]
        if length == 0:
            return offsets
        pos += length + 1


def name_to_text(name_wire: bytes) -> str:
    """Presentation form of an uncompressed wire name (``example.org.``)."""
    if name_wire == b"\x00":
        return "."
    parts = []
    pos = 0
    while name_wire[pos]:
        length = name_wire[pos]
        label = name_wire[pos + 1 : pos + 1 + length]
        if label.isascii() and all(33 <= c < 127 and c not in b'."\\;()@$' for c in label):
            parts.append(label.decode("ascii"))
        else:
            parts.append("".join(_escape(c) for c in label))
        pos += length + 1
    return ".".join(parts) + "."


def _escape(c: int) -> str:
    if c in b'."\\;()@$':
        return "\\" + chr(c)
    if 33 <= c < 127:
        return chr(c)
    return f"\\{c:03d}"


def question_bytes(wire: bytes, info: QueryInfo) -> bytes:
    """The question section exactly as asked (name, type, class)."""
    return wire[HEADER_LEN : info.name_end + 4]


def error_reply(wire: bytes, info: QueryInfo | None, rcode: int) -> bytes:
    """A reply with ``rcode`` that echoes ID, opcode, RD and the question.

    Extended rcodes (BADVERS) go in the OPT record, which is present when the
    query had one or when the rcode needs it.
    """
    qid = _U16.unpack_from(wire)[0] if len(wire) >= 2 else 0
    if info is None:
        asked = _U16.unpack_from(wire, 2)[0] if len(wire) >= 4 else 0
        flags = FLAG_QR | (asked & (0x7800 | FLAG_RD)) | (rcode & 0xF)
        return _HEADER.pack(qid, flags, 0, 0, 0, 0)
    flags = FLAG_QR | (info.flags & (0x7800 | FLAG_RD | FLAG_CD)) | (rcode & 0xF)
    question = b""
    qdcount = 0
    if info.qdcount >= 1 and info.name_end > HEADER_LEN:
        question = wire[HEADER_LEN : info.name_end + 4]
        qdcount = 1
    opt = b""
    if info.edns or rcode > 15:
        ext = rcode >> 4
        opt = (
            b"\x00\x00\x29"
            + _U16.pack(OUR_PAYLOAD)
            + bytes((ext, 0, 0x80 if info.do else 0, 0))
            + b"\x00\x00"
        )
    return _HEADER.pack(qid, flags, qdcount, 0, 0, 1 if opt else 0) + question + opt


EDNS_EDE = 15
"""The EDNS option code of an Extended DNS Error (RFC 8914)."""
_EDE = struct.Struct(">HHH")
_OPT_START = b"\x00\x00\x29"  # an OPT record: the root name, then type 41


def extended_error(info_code: int) -> bytes:
    """An Extended DNS Error option in wire form (code, length, INFO-CODE; no text)."""
    return _EDE.pack(EDNS_EDE, 2, info_code)


def with_edns_options(reply: bytes, options: bytes) -> bytes:
    """``reply``, an ``error_reply`` to an EDNS query, with ``options`` (wire form) in its OPT.

    Such a reply ends with its own OPT record, which holds no options yet (its
    last two bytes are the empty RDLENGTH), so they are appended in place.
    """
    if not options:
        return reply
    if reply[-11:-8] != _OPT_START or reply[-2:] != b"\x00\x00":
        raise ValueError("the reply does not end with an empty OPT record")
    return reply[:-2] + _U16.pack(len(options)) + options


def extended_errors(wire: bytes) -> bytes:
    """The Extended DNS Error options of a message's OPT record, in wire form (b'' if none)."""
    try:
        qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHH", wire, 4)
        offset = HEADER_LEN
        for _ in range(qdcount):
            offset = skip_name(wire, offset) + 4
        for _ in range(ancount + nscount):
            offset = _skip_rr(wire, offset)
        found = []
        for _ in range(arcount):
            end = skip_name(wire, offset)
            rtype, rdlen = struct.unpack_from(">H6xH", wire, end)
            offset = end + 10 + rdlen
            if rtype != TYPE_OPT:
                continue
            pos = end + 10
            while pos + 4 <= offset:
                code, length = struct.unpack_from(">HH", wire, pos)
                if code == EDNS_EDE:
                    found.append(wire[pos : pos + 4 + length])
                pos += 4 + length
    except (WireError, struct.error):
        return b""
    return b"".join(found)


def with_payload(wire: bytes, payload: int) -> bytes:
    """``wire`` (a query) with its OPT record's UDP payload size set to ``payload``.

    Unchanged when it has no OPT record or cannot be read that far.
    """
    try:
        qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHH", wire, 4)
        offset = HEADER_LEN
        for _ in range(qdcount):
            offset = skip_name(wire, offset) + 4
        for _ in range(ancount + nscount):
            offset = _skip_rr(wire, offset)
        for _ in range(arcount):
            end = skip_name(wire, offset)
            if end + 10 > len(wire):
                break
            if _U16.unpack_from(wire, end)[0] == TYPE_OPT:
                return wire[: end + 2] + _U16.pack(payload) + wire[end + 4 :]
            offset = end + 10 + _U16.unpack_from(wire, end + 8)[0]
    except (WireError, struct.error):
        pass
    return wire


def reply_rcode(wire: bytes) -> int:
    """The (non-extended) rcode of a reply."""
    return wire[3] & 0xF if len(wire) >= 4 else dns.rcode.SERVFAIL


def max_reply_size(proto: str, info: QueryInfo, server_cap: int = OUR_PAYLOAD) -> int:
    """How large a reply to this query may be: TCP 65535, UDP min(client, cap)."""
    if proto != "udp":
        return MAX_TCP
    if not info.edns:
        return 512
    return max(512, min(info.edns_payload, server_cap))


def reply_limit(proto: str, edns: bool, payload: int, server_cap: int) -> int:
    """The largest reply a client takes: 64 KiB over TCP, its EDNS payload (at most
    ``server_cap``) over UDP, 512 bytes for a UDP query without EDNS."""
    if proto != "udp":
        return MAX_TCP
    return min(payload, server_cap) if edns else 512


def fit_reply(reply: bytes, max_size: int) -> bytes:
    """Truncate a wire reply to ``max_size`` with TC=1, keeping the OPT record.

    The common case (it fits) costs one ``len``. An oversize reply is parsed
    and re-rendered by dnspython, which drops whole RRsets.
    """
    if len(reply) <= max_size:
        return reply
    try:
        msg = dns.message.from_wire(reply, ignore_trailing=True)
        out = msg.to_wire(max_size=max_size, prefer_truncation=True)
    except (dns.exception.DNSException, ValueError):
        out = b""
    if not out or len(out) > max_size:
        # Last resort: header plus question, TC set.
        info = read_query(reply)
        out = error_reply(reply, info, reply_rcode(reply))
    flags = _U16.unpack_from(out, 2)[0] | FLAG_TC
    return out[:2] + _U16.pack(flags) + out[4:]


def message_to_wire(msg: dns.message.Message, max_size: int) -> bytes:
    """Render a dnspython reply within ``max_size``, truncating with TC=1."""
    return msg.to_wire(max_size=max_size, prefer_truncation=True)


def opt_record(do: bool) -> bytes:
    """Our OPT record: 1232-byte payload, version 0, DO mirrored."""
    return _OPT_DO if do else _OPT_NO_DO


def strip_opt(wire: bytes) -> bytes:
    """Remove a trailing OPT record (the usual place) from a message, if any.

    Used before storing a reply: the OPT record describes one transaction and
    must never be replayed to another client (nor its TTL field decremented).
    """
    qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHH", wire, 4)
    if arcount == 0:
        return wire
    offset = HEADER_LEN
    for _ in range(qdcount):
        offset = skip_name(wire, offset) + 4
    for _ in range(ancount + nscount + arcount - 1):
        offset = _skip_rr(wire, offset)
    last = offset
    end = skip_name(wire, last)
    if end + 10 <= len(wire) and _U16.unpack_from(wire, end)[0] == TYPE_OPT:
        out = bytearray(wire[:last])
        _U16.pack_into(out, 10, arcount - 1)
        return bytes(out)
    return wire


def _skip_rr(wire: bytes, offset: int) -> int:
    end = skip_name(wire, offset)
    if end + 10 > len(wire):
        raise WireError("record runs past the end of the message")
    rdlen: int = _U16.unpack_from(wire, end + 8)[0]
    return end + 10 + rdlen


def ttl_offsets(wire: bytes) -> tuple[list[int], list[int]]:
    """Offsets and values of every TTL field in a message (OPT excluded)."""
    qdcount, ancount, nscount, arcount = struct.unpack_from(">HHHH", wire, 4)
    offset = HEADER_LEN
    for _ in range(qdcount):
        offset = skip_name(wire, offset) + 4
    offsets: list[int] = []
    values: list[int] = []
    for _ in range(ancount + nscount + arcount):
        end = skip_name(wire, offset)
        if end + 10 > len(wire):
            raise WireError("record runs past the end of the message")
        rtype = _U16.unpack_from(wire, end)[0]
        if rtype != TYPE_OPT:
            offsets.append(end + 4)
            values.append(_U32.unpack_from(wire, end + 4)[0])
        offset = end + 10 + _U16.unpack_from(wire, end + 8)[0]
    return offsets, values


class PreparedReply:
    """A reply kept as wire bytes, answered again by patching, not rebuilding.

    The stored bytes hold no OPT record. ``render`` joins the client's ID, the
    stored header (flags with the client's RD and CD bits, the stored AD bit
    only if the client set AD or DO, and the counts), the client's question
    name (so the letter case is the client's) and the stored rest, and appends
    our OPT record when the client sent one. ``aged`` gives a copy with every
    TTL lowered (a cache keeps one per second of age).

    A reply built with ``spliced`` takes the whole question (name, type and
    class) from the query and stores only records that name their owner by a
    pointer to offset 12: one such reply serves any name and type it belongs
    to, whatever the name's length (the meshhosts table, wildcards).

    Compact, as a cache or a mesh table keeps tens of thousands of these: the
    only bytes of its own are what follows the question name (the stored
    question name is never sent); the header variants and the TTL offsets
    (relative to those bytes) are shared by every reply of the same shape.
    """

    __slots__ = ("_asked", "_heads", "_offsets", "_tail")

    _asked: int
    """0, or 4 when the query's type and class are sent too (spliced)."""
    _heads: _Heads
    """Header after the ID for each combination of the query's EDNS, RD, AD and CD (``_heads``)."""
    _offsets: tuple[int, ...]
    """Where each TTL field is in ``_tail`` (OPT excluded)."""
    _tail: bytes

    def __init__(self, wire: bytes, offsets: Sequence[int] | None = None) -> None:
        """Prepare ``wire``; ``offsets`` (its TTL positions) when already known and
        the OPT record already gone, which saves walking the records again."""
        if offsets is None:
            wire = strip_opt(wire)
            offsets = ttl_offsets(wire)[0]
        name_end = _name_end(wire)
        self._asked = 0
        self._heads = _heads(*struct.unpack_from(">HHHHH", wire, 2))
        self._offsets = _shared_offsets(tuple(off - name_end for off in offsets))
        self._tail = wire[name_end:]

    def _splice(self, flags: int, answers: int, authority: int, records: bytes) -> None:
        """Set up a reply whose question always comes whole from the query."""
        self._asked = 4
        self._heads = _heads(flags, 1, answers, authority, 0)
        self._offsets = ()
        self._tail = records

    @classmethod
    def spliced(cls, flags: int, answers: int, authority: int, records: bytes) -> PreparedReply:
        """A reply of ``records`` (owners pointing at offset 12) for any question."""
        reply = cls.__new__(cls)
        reply._splice(flags, answers, authority, records)
        return reply

    def _with_tail(self, tail: bytes) -> PreparedReply:
        """A reply of the same shape whose bytes after the question name are ``tail``."""
        reply = PreparedReply.__new__(PreparedReply)
        reply._asked = self._asked
        reply._heads = self._heads
        reply._offsets = self._offsets
        reply._tail = tail
        return reply

    @property
    def records(self) -> bytes:
        """Everything after the question: the stored records."""
        return self._tail[4 - self._asked :]

    @property
    def rcode(self) -> int:
        """The (non-extended) rcode of the reply."""
        return self._heads[0][1] & 0xF

    @property
    def ttls(self) -> list[int]:
        """The TTL of each record, in message order (OPT excluded)."""
        tail = self._tail
        return [_U32.unpack_from(tail, off)[0] for off in self._offsets]

    @classmethod
    def from_message(cls, msg: dns.message.Message) -> PreparedReply:
        """Prepare a dnspython message (rendered once; its OPT record dropped)."""
        return cls(msg.to_wire(max_size=MAX_TCP))

    @property
    def min_ttl(self) -> int:
        """The smallest TTL in the reply, 0 when it holds no records."""
        return min(self.ttls, default=0)

    def render(self, query: bytes, name_end: int, edns: bool, do: bool) -> bytes:
        """The reply for ``query``: its ID, RD/CD bits and question casing; our OPT if asked.

        The stored AD bit goes out only to a client that set AD or DO in its
        query (RFC 6840 section 5.7); ``query[3] & 0x30`` (its AD and CD bits)
        picks the header, so this costs no more than copying CD alone.
        """
        # One join: each ``+`` would make an intermediate bytes object.
        if edns:
            if do:
                return _join((
                    query[:2],
                    self._heads[(14 if query[2] & 1 else 10) | ((query[3] & 0x10) >> 4)],
                    query[12 : name_end + self._asked], self._tail, _OPT_DO,
                ))  # fmt: skip
            return _join((
                query[:2],
                self._heads[(12 if query[2] & 1 else 8) | ((query[3] & 0x30) >> 4)],
                query[12 : name_end + self._asked], self._tail, _OPT_NO_DO,
            ))  # fmt: skip
        return _join((
            query[:2],
            self._heads[(4 if query[2] & 1 else 0) | ((query[3] & 0x30) >> 4)],
            query[12 : name_end + self._asked], self._tail,
        ))  # fmt: skip

    def aged(self, age: int) -> PreparedReply:
        """A copy whose TTLs are lowered by ``age`` seconds (never below 0; not spliced)."""
        out = bytearray(self._tail)
        for off in self._offsets:
            ttl = _U32.unpack_from(out, off)[0]
            _U32.pack_into(out, off, ttl - age if ttl > age else 0)
        return self._with_tail(bytes(out))

    def with_ttl(self, ttl: int) -> PreparedReply:
        """A copy whose every TTL is ``ttl`` (stale answers use this)."""
        return self._with_tail(replace_ttls(self._tail, self._offsets, ttl))


_Heads = tuple[bytes, ...]
_HEADS: dict[tuple[int, int, int, int, int], _Heads] = {}
_OFFSETS: dict[tuple[int, ...], tuple[int, ...]] = {}
_SHARED_MAX = 1024
"""Distinct shapes remembered for sharing; past this the memory starts anew."""


def _heads(flags: int, qd: int, an: int, ns: int, ar: int) -> _Heads:
    """The header after the ID for each combination of the query's bits.

    Indexed by ``(EDNS << 3) | (RD << 2) | (AD kept << 1) | CD``: RD and CD
    are the client's, AD is the stored one or cleared, and with EDNS the
    additional count includes our OPT record. Shared by every prepared reply
    with the same flags and counts (there are few).
    """
    base = flags & ~(FLAG_RD | FLAG_CD)
    found = _HEADS.get((base, qd, an, ns, ar))
    if found is None:
        if len(_HEADS) >= _SHARED_MAX:
            _HEADS.clear()
        found = _HEADS[(base, qd, an, ns, ar)] = tuple(
            _HEADER.pack(
                0,
                (base if i & 2 else base & ~FLAG_AD)
                | (FLAG_RD if i & 4 else 0)
                | (FLAG_CD if i & 1 else 0),
                qd, an, ns, ar + (1 if i & 8 else 0),
            )[2:]
            for i in range(16)
        )  # fmt: skip
    return found


def _shared_offsets(offsets: tuple[int, ...]) -> tuple[int, ...]:
    """``offsets``, or an equal tuple already held by another reply."""
    found = _OFFSETS.get(offsets)
    if found is None:
        if len(_OFFSETS) >= _SHARED_MAX:
            _OFFSETS.clear()
        found = _OFFSETS[offsets] = offsets
    return found


def _name_end(wire: bytes) -> int:
    """Offset after the question name of a message with one question (12 if none)."""
    if _U16.unpack_from(wire, 4)[0] == 0:
        return HEADER_LEN
    return skip_name(wire, HEADER_LEN)


def replace_ttls(wire: bytes, offsets: Sequence[int], ttl: int) -> bytes:
    """Set every TTL at ``offsets`` to ``ttl`` (stale answers use this)."""
    out = bytearray(wire)
    for off in offsets:
        _U32.pack_into(out, off, ttl)
    return bytes(out)
