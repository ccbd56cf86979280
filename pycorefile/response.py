"""Reading a reply's bytes: its records one by one, and what kind of reply it is.

Two public helpers over wire bytes, with no dnspython and no I/O, shared by
the plugins that look into replies (cache, log, autopath, forward):

- ``records(wire)`` walks the resource records of a message, after its
  question, and yields each one's section, type, class, TTL and where its
  owner name and rdata are. A message cut short or malformed raises
  ``WireError`` where the walk cannot go on; the records before it have been
  yielded.
- ``typify(wire)`` is CoreDNS's ``response.Typify``: NOERROR, NXDOMAIN,
  NODATA, DELEGATION, SERVERERROR, META, UPDATE or OTHERERROR; and
  ``reply_class`` is its ``response.Classify`` (success, denial, error), the
  classes of the *log* plugin's ``class`` filter.
"""

from __future__ import annotations

import enum
import struct
import time
from collections.abc import Iterator

from ._wire import HEADER_LEN, TYPE_OPT, WireError, skip_name

__all__ = [
    "ADDITIONAL",
    "ANSWER",
    "AUTHORITY",
    "Record",
    "ReplyClass",
    "ReplyType",
    "WireError",
    "question_end",
    "records",
    "reply_class",
    "typify",
]

ANSWER = 1
AUTHORITY = 2
ADDITIONAL = 3
"""Sections, numbered as dnspython's ``MessageSection`` (the question is 0)."""

Record = tuple[int, int, int, int, int, int, int]
"""One record as ``records`` yields it, a plain tuple (made once per record, so
cheap): ``(section, rtype, rclass, ttl, name_at, rdata_at, rdata_end)``.

``name_at`` is where the owner name starts (it may be a compression pointer),
``rdata_at:rdata_end`` is the rdata; the 32-bit TTL field is at
``rdata_at - 6`` (``TTL_BEFORE_RDATA`` bytes before the rdata). For the OPT
record, ``rclass`` is the sender's UDP payload size and ``ttl`` holds the
extended rcode's upper bits (``ttl >> 24``) and the DO bit (``ttl & 0x8000``).
"""

TTL_BEFORE_RDATA = 6
"""The TTL field of a record starts this many bytes before its rdata."""

_COUNTS = struct.Struct(">HHHH")
_RR = struct.Struct(">HHIH")
_U16 = struct.Struct(">H")


def question_end(wire: bytes) -> int:
    """The offset after a message's question section (where its records start)."""
    if len(wire) < HEADER_LEN:
        raise WireError("shorter than a DNS header")
    offset = HEADER_LEN
    for _ in range(_U16.unpack_from(wire, 4)[0]):
        offset = skip_name(wire, offset) + 4
    if offset > len(wire):
        raise WireError("question runs past the end of the message")
    return offset


def records(wire: bytes, start: int = 0) -> Iterator[Record]:
    """Each resource record of ``wire``, answer section first (see ``Record``).

    ``start`` is where the records begin when the caller knows it
    (``question_end``); by default the question section is skipped here. A
    record that runs past the end of the message raises ``WireError``.
    """
    if len(wire) < HEADER_LEN:
        raise WireError("shorter than a DNS header")
    qdcount, ancount, nscount, arcount = _COUNTS.unpack_from(wire, 4)
    size = len(wire)
    unpack = _RR.unpack_from
    section = ANSWER
    authority_end = ancount + nscount
    try:
        offset = start
        if not offset:
            offset = HEADER_LEN
            for _ in range(qdcount):
                offset = skip_name(wire, offset) + 4
        for index in range(authority_end + arcount):
            if index >= ancount:
                section = ADDITIONAL if index >= authority_end else AUTHORITY
            # The usual owner is one compression pointer; the others are walked.
            end = offset + 2 if wire[offset] >= 0xC0 else skip_name(wire, offset)
            rtype, rclass, ttl, rdlength = unpack(wire, end)  # struct.error past the end
            rdata_end = end + 10 + rdlength
            if rdata_end > size:
                raise WireError("rdata runs past the end of the message")
            yield section, rtype, rclass, ttl, offset, end + 10, rdata_end
            offset = rdata_end
    except (IndexError, struct.error):
        raise WireError("record runs past the end of the message") from None


class ReplyType(enum.StrEnum):
    """What kind of reply a message is (CoreDNS's ``response.Type``), named as CoreDNS prints it."""

    NOERROR = "NOERROR"
    """Answers, or an empty NOERROR with neither SOA nor NS in the authority section."""
    NXDOMAIN = "NXDOMAIN"
    """NXDOMAIN without answers (with or without an SOA)."""
    NODATA = "NODATA"
    """NOERROR, no answers, an SOA in the authority section."""
    DELEGATION = "DELEGATION"
    """NOERROR, no answers, NS records in the authority section."""
    SERVERERROR = "SERVERERROR"
    """SERVFAIL or NOTIMP."""
    META = "META"
    """A NOTIFY, or the reply to a zone transfer (AXFR, IXFR)."""
    UPDATE = "UPDATE"
    """A dynamic update."""
    OTHERERROR = "OTHERERROR"
    """Anything else: REFUSED, FORMERR, NXDOMAIN *with* answers, an expired signature
    in a reply with DO set, no reply at all."""


class ReplyClass(enum.StrEnum):
    """CoreDNS's ``response.Class``: the log plugin's ``class`` filter."""

    ALL = "all"
    SUCCESS = "success"
    DENIAL = "denial"
    ERROR = "error"


_CLASS_OF = {
    ReplyType.NOERROR: ReplyClass.SUCCESS,
    ReplyType.DELEGATION: ReplyClass.SUCCESS,
    ReplyType.NXDOMAIN: ReplyClass.DENIAL,
    ReplyType.NODATA: ReplyClass.DENIAL,
}

_NOERROR = ReplyType.NOERROR
_NXDOMAIN = ReplyType.NXDOMAIN
_NODATA = ReplyType.NODATA
_DELEGATION = ReplyType.DELEGATION
_SERVERERROR = ReplyType.SERVERERROR
_META = ReplyType.META
_UPDATE = ReplyType.UPDATE
_OTHERERROR = ReplyType.OTHERERROR
_ERROR = ReplyClass.ERROR
"""(Enum members read once: a class attribute lookup costs a few hundred ns in Python 3.11.)"""

_TYPE_NS = 2
_TYPE_SOA = 6
_TYPE_RRSIG = 46
_ZONE_TRANSFERS = (251, 252)  # IXFR, AXFR
_OPCODE_NOTIFY = 4
_OPCODE_UPDATE = 5
_RCODE_NOERROR = 0
_RCODE_SERVFAIL = 2
_RCODE_NXDOMAIN = 3
_RCODE_NOTIMP = 4
_YEAR68 = 1 << 31
"""Half the 32-bit serial space: RFC 1982 arithmetic on signature dates."""
_SIGNATURE_DATES = struct.Struct(">II")
"""An RRSIG's expiration and inception, 8 bytes into its rdata."""


def reply_class(reply_type: ReplyType) -> ReplyClass:
    """The class of a reply type (CoreDNS's ``response.Classify``): never ``ALL``."""
    return _CLASS_OF.get(reply_type, _ERROR)


def typify(wire: bytes, now: float | None = None) -> ReplyType:
    """The type of the reply ``wire``, as CoreDNS's ``response.Typify``.

    The rcode is the full one (the OPT record's upper bits included, so
    BADVERS is not NOERROR). ``now`` (seconds since the epoch, default the
    current time) judges the signatures when the reply's OPT record has DO
    set. A reply cut short is judged by the records that could be read; an
    empty one (nothing was sent) is OTHERERROR.
    """
    if len(wire) < HEADER_LEN:
        return _OTHERERROR
    opcode = (wire[2] >> 3) & 0xF
    if opcode == _OPCODE_UPDATE:
        return _UPDATE
    if opcode == _OPCODE_NOTIFY:
        return _META
    rcode = wire[3] & 0xF
    answers = wire[6] << 8 | wire[7]
    soa = ns = do = False
    signatures: list[tuple[int, int]] | None = None
    try:
        start = question_end(wire)
        if (wire[4] or wire[5]) and wire[start - 4] == 0 and wire[start - 3] in _ZONE_TRANSFERS:
            return _META
        if answers and not (wire[10] or wire[11]) and rcode in (_RCODE_NOERROR, _RCODE_NXDOMAIN):
            # No OPT record: no DO bit, no extended rcode; the records decide nothing more.
            return _NOERROR if rcode == _RCODE_NOERROR else _OTHERERROR
        for section, rtype, _rclass, ttl, _name, rdata_at, rdata_end in records(wire, start):
            if rtype == _TYPE_RRSIG:
                if rdata_end - rdata_at >= 16:
                    if signatures is None:
                        signatures = []
                    signatures.append(_SIGNATURE_DATES.unpack_from(wire, rdata_at + 8))
            elif section == AUTHORITY:
                if rtype == _TYPE_SOA:
                    soa = True
                elif rtype == _TYPE_NS:
                    ns = True
            elif rtype == TYPE_OPT and section == ADDITIONAL:
                rcode |= (ttl >> 24) << 4  # the extended rcode's upper bits
                do = bool(ttl & 0x8000)
    except (WireError, struct.error):
        pass
    if do and signatures is not None and _expired(signatures, time.time() if now is None else now):
        return _OTHERERROR
    if answers and rcode == _RCODE_NOERROR:
        return _NOERROR
    if answers and rcode == _RCODE_NXDOMAIN:
        return _OTHERERROR  # a name that does not exist, with records: impossible
    if soa and rcode == _RCODE_NOERROR:
        return _NODATA
    if rcode == _RCODE_NXDOMAIN:
        return _NXDOMAIN
    if rcode in (_RCODE_SERVFAIL, _RCODE_NOTIMP):
        return _SERVERERROR
    if ns and rcode == _RCODE_NOERROR:
        return _DELEGATION
    if rcode == _RCODE_NOERROR:
        return _NOERROR
    return _OTHERERROR


def _expired(signatures: list[tuple[int, int]], now: float) -> bool:
    """True when a signature (expiration, inception) is outside its validity period,
    as miekg/dns's ``RRSIG.ValidityPeriod`` (dates in RFC 1982 serial arithmetic)."""
    utc = int(now)
    for expiration, inception in signatures:
        start = inception + _serial_turns(inception - utc) * _YEAR68
        end = expiration + _serial_turns(expiration - utc) * _YEAR68
        if not start <= utc <= end:
            return True
    return False


def _serial_turns(delta: int) -> int:
    """``delta / 2**31`` rounded toward zero, as Go's integer division."""
    return delta // _YEAR68 if delta >= 0 else -(-delta // _YEAR68)
