"""Sans-IO wire work of forwarding: queries to upstreams, checking and restoring replies.

Everything here is a function over bytes. A reply is accepted only when its
ID, QR bit and question (name compared without letter case, type and class
exactly) match what was sent and its records can be walked to the end; the
client then gets the upstream's bytes with its own ID and question casing,
and our EDNS payload in the OPT record.
"""

from __future__ import annotations

import secrets
import struct
from typing import NamedTuple

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from pycorefile.response import ADDITIONAL, records
from pycorefile.wire import HEADER_LEN, OUR_PAYLOAD, TYPE_OPT, WireError, read_query

_U16 = struct.Struct(">H")
_HEADER_COUNTS = struct.Struct(">HHH")
_OUR_PAYLOAD = _U16.pack(OUR_PAYLOAD)
_ERRORS_WITHOUT_QUESTION = frozenset(
    {dns.rcode.FORMERR, dns.rcode.SERVFAIL, dns.rcode.NOTIMP, dns.rcode.REFUSED}
)
_RCODE_NAMES = {int(r): r.name for r in dns.rcode.Rcode}
FLAG_QR = 0x80
"""QR in the first flags byte."""
FLAG_TC = 0x02
"""TC in the first flags byte."""


class Question(NamedTuple):
    """What a reply must echo: the lowercased wire name, then type and class as bytes.

    (Tuples, as ``Checked``: one of each is made per forwarded query.)
    """

    name: bytes
    type_class: bytes

    @classmethod
    def of(cls, wire: bytes) -> Question:
        """The question of a query (raises WireError when it has none)."""
        info = read_query(wire)
        if info.qdcount != 1:
            raise WireError("a forwarded query needs exactly one question")
        end = info.name_end
        return cls(wire[HEADER_LEN:end].lower(), wire[end : end + 4])


class Checked(NamedTuple):
    """A reply that matched: where its records end and where its OPT record is."""

    end: int
    """Offset after the last record (bytes after it are dropped)."""
    rcode: int
    """The full rcode (the OPT record's upper bits included)."""
    opt_start: int = 0
    """Offset of the OPT record, 0 when there is none."""
    opt_end: int = 0
    opt_payload: int = 0
    """Offset of the OPT record's CLASS field: the sender's UDP payload size."""
    truncated: bool = False
    has_question: bool = True


_IDS: list[int] = []
_IDS_PER_READ = 1024


def new_id() -> int:
    """A random 16-bit query ID from the system's CSPRNG (not guessable from earlier IDs).

    The CSPRNG is read 2 KB at a time: one system call per 1,024 IDs.
    """
    if not _IDS:
        _IDS.extend(struct.unpack(f">{_IDS_PER_READ}H", secrets.token_bytes(2 * _IDS_PER_READ)))
    return _IDS.pop()


def with_id(wire: bytes, qid: int) -> bytes:
    """The query as sent upstream: the client's bytes under another ID."""
    return _U16.pack(qid) + wire[2:]


def check_reply(data: bytes, qid: int, question: Question) -> Checked | None:
    """The reply's layout when it answers our query, else None (drop it and wait on)."""
    if len(data) < HEADER_LEN or _U16.unpack_from(data)[0] != qid or not data[2] & FLAG_QR:
        return None
    qdcount, ancount, nscount = _HEADER_COUNTS.unpack_from(data, 4)
    rcode = data[3] & 0xF
    truncated = bool(data[2] & FLAG_TC)
    if qdcount == 0:
        # Some servers answer errors without the question; accept only those.
        if rcode in _ERRORS_WITHOUT_QUESTION and ancount == nscount == 0:
            return Checked(HEADER_LEN, rcode, truncated=truncated, has_question=False)
        return None
    if qdcount != 1:
        return None
    name_end = HEADER_LEN + len(question.name)
    if (
        data[HEADER_LEN:name_end].lower() != question.name
        or data[name_end : name_end + 4] != question.type_class
    ):
        return None
    offset = name_end + 4
    opt_start = opt_end = opt_payload = 0
    try:
        for section, rtype, _rclass, ttl, name_at, rdata_at, rdata_end in records(data, offset):
            offset = rdata_end
            if rtype == TYPE_OPT and section == ADDITIONAL:
                if opt_start:
                    return None  # two OPT records: malformed (RFC 6891 section 6.1.1)
                opt_start, opt_end, opt_payload = name_at, rdata_end, rdata_at - 8
                rcode |= (ttl >> 24) << 4
    except WireError:
        return None
    return Checked(offset, rcode, opt_start, opt_end, opt_payload, truncated)


def client_reply(data: bytes, checked: Checked, query: bytes, name_end: int, edns: bool) -> bytes:
    """The upstream's reply as the client gets it.

    The client's ID and question bytes (its letter case) replace the
    upstream's; bytes after the last record are dropped; the OPT record
    advertises our 1232-byte payload, and is removed if the client sent none.
    """
    if not checked.has_question:
        raise ValueError("a reply without a question is answered from the query")
    out = bytearray(query[:2])
    out += data[2:HEADER_LEN]
    out += query[HEADER_LEN:name_end]
    if not checked.opt_start:
        out += data[name_end : checked.end]
        return bytes(out)
    if edns:
        out += data[name_end : checked.end]
        # The payload size, at the same offset: the question has the same length.
        out[checked.opt_payload : checked.opt_payload + 2] = _OUR_PAYLOAD
        return bytes(out)
    out += data[name_end : checked.opt_start]
    out += data[checked.opt_end : checked.end]
    arcount = _U16.unpack_from(out, 10)[0]
    _U16.pack_into(out, 10, arcount - 1)
    return bytes(out)


def probe_query(name: str, rdtype: int, recursion: bool) -> bytes:
    """A query of our own (health check, loop probe); its ID is replaced when sent."""
    msg = dns.message.make_query(
        dns.name.from_text(name), dns.rdatatype.RdataType.make(rdtype), use_edns=False
    )
    if not recursion:
        msg.flags &= ~dns.flags.RD
    return msg.to_wire()


def rcode_label(rcode: int) -> str:
    """CoreDNS's rcode label: the name (``NXDOMAIN``), or ``RCODE<n>``."""
    return _RCODE_NAMES.get(rcode) or f"RCODE{rcode}"
