"""What kind of reply a query got, read from the reply's bytes: CoreDNS's ``response.Typify``.

The log plugin's ``class`` filter and its ``log/type`` and ``log/class``
placeholders need it. The types and their classes, as CoreDNS 1.14:

- NOERROR (answers, or an empty NOERROR without SOA or NS), DELEGATION (NS
  in the authority section): ``success``;
- NXDOMAIN (with or without an SOA), NODATA (NOERROR, no answers, an SOA):
  ``denial``;
- SERVERROR (SERVFAIL, NOTIMP), META (NOTIFY, AXFR, IXFR), UPDATE, OTHERERROR
  (REFUSED, FORMERR, NXDOMAIN *with* answers, an expired signature in a DO
  reply, no reply at all, ...): ``error``.

The rcode is the full one (the OPT record's upper bits included, so BADVERS
is not NOERROR). No dnspython: the records' types and a signature's dates are
read in place.
"""

from __future__ import annotations

import time

from pycorefile import Request

NOERROR = "NOERROR"
NXDOMAIN = "NXDOMAIN"
NODATA = "NODATA"
DELEGATION = "DELEGATION"
SERVERROR = "SERVERROR"
OTHERERROR = "OTHERERROR"
META = "META"
UPDATE = "UPDATE"

SUCCESS = "success"
DENIAL = "denial"
ERROR = "error"
ALL = "all"
CLASSES = (ALL, SUCCESS, DENIAL, ERROR)

_CLASS_OF = {
    NOERROR: SUCCESS,
    DELEGATION: SUCCESS,
    NXDOMAIN: DENIAL,
    NODATA: DENIAL,
}

_TYPE_NS = 2
_TYPE_SOA = 6
_TYPE_OPT = 41
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


def class_of(reply_type: str) -> str:
    """The log class of a reply type (CoreDNS's ``response.Classify``)."""
    return _CLASS_OF.get(reply_type, ERROR)


def typify(request: Request, wire: bytes, now: float | None = None) -> str:
    """The reply's type as CoreDNS names it (NOERROR, NXDOMAIN, NODATA, ...).

    ``now`` (seconds since the epoch, default the current time) judges the
    signatures of a reply to a DO query.
    """
    if len(wire) < 12:
        return OTHERERROR  # nothing was sent (a drop)
    opcode = (wire[2] >> 3) & 0xF
    if opcode == _OPCODE_UPDATE:
        return UPDATE
    if opcode == _OPCODE_NOTIFY or request.qtype in _ZONE_TRANSFERS:
        return META
    facts = _read(wire)
    rcode = facts.rcode
    if facts.do and _expired(facts.signatures, time.time() if now is None else now):
        return OTHERERROR
    answers = (wire[6] << 8) | wire[7]
    if answers and rcode == _RCODE_NOERROR:
        return NOERROR
    if answers and rcode == _RCODE_NXDOMAIN:
        return OTHERERROR  # a name that does not exist, with records: impossible
    if facts.soa and rcode == _RCODE_NOERROR:
        return NODATA
    if rcode == _RCODE_NXDOMAIN:
        return NXDOMAIN
    if rcode in (_RCODE_SERVFAIL, _RCODE_NOTIMP):
        return SERVERROR
    if facts.ns and rcode == _RCODE_NOERROR:
        return DELEGATION
    if rcode == _RCODE_NOERROR:
        return NOERROR
    return OTHERERROR


class _Facts:
    """What the typing needs from a reply's records."""

    __slots__ = ("do", "ns", "rcode", "signatures", "soa")

    def __init__(self, header_rcode: int) -> None:
        self.rcode = header_rcode
        self.soa = False
        self.ns = 0
        self.do = False
        self.signatures: list[tuple[int, int]] = []
        """(inception, expiration) of every RRSIG, in any section."""


def _read(wire: bytes) -> _Facts:
    """Walk the records once; a reply cut short is judged by what could be read."""
    facts = _Facts(wire[3] & 0xF)
    qdcount = (wire[4] << 8) | wire[5]
    ancount = (wire[6] << 8) | wire[7]
    nscount = (wire[8] << 8) | wire[9]
    arcount = (wire[10] << 8) | wire[11]
    try:
        pos = 12
        for _ in range(qdcount):
            pos = _skip_name(wire, pos) + 4
        for index in range(ancount + nscount + arcount):
            end = _skip_name(wire, pos)
            rtype = (wire[end] << 8) | wire[end + 1]
            rdlength = (wire[end + 8] << 8) | wire[end + 9]
            rdata = end + 10
            if rtype == _TYPE_RRSIG:
                facts.signatures.append((_u32(wire, rdata + 12), _u32(wire, rdata + 8)))
            elif ancount <= index < ancount + nscount:
                if rtype == _TYPE_SOA:
                    facts.soa = True
                elif rtype == _TYPE_NS:
                    facts.ns += 1
            elif rtype == _TYPE_OPT and index >= ancount + nscount:
                facts.rcode |= wire[end + 4] << 4  # the extended rcode's upper bits
                facts.do = bool(wire[end + 6] & 0x80)
            pos = rdata + rdlength
    except IndexError:
        pass
    return facts


def _expired(signatures: list[tuple[int, int]], now: float) -> bool:
    """True when a signature is outside its validity period (as miekg/dns ``ValidityPeriod``)."""
    utc = int(now)
    for inception, expiration in signatures:
        start = inception + _serial_turns(inception - utc) * _YEAR68
        end = expiration + _serial_turns(expiration - utc) * _YEAR68
        if not start <= utc <= end:
            return True
    return False


def _serial_turns(delta: int) -> int:
    """``delta / 2**31`` rounded toward zero, as Go's integer division."""
    return delta // _YEAR68 if delta >= 0 else -(-delta // _YEAR68)


def _u32(wire: bytes, pos: int) -> int:
    if pos + 4 > len(wire):
        raise IndexError(pos)
    return int.from_bytes(wire[pos : pos + 4], "big")


def _skip_name(wire: bytes, pos: int) -> int:
    while True:
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0:
            return pos + 2
        pos += length + 1
