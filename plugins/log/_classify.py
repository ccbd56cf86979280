"""What kind of reply a query got, read from the reply's bytes (CoreDNS's ``response.Typify``).

The log plugin's ``class`` filter needs it: ``success`` (NOERROR, DELEGATION),
``denial`` (NXDOMAIN, NODATA), ``error`` (SERVERROR, OTHERERROR). Only the
header and the types of the authority records are read; no dnspython.
"""

from __future__ import annotations

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
    SERVERROR: ERROR,
    OTHERERROR: ERROR,
}

_TYPE_SOA = 6
_TYPE_NS = 2
_ZONE_TRANSFERS = (251, 252)  # IXFR, AXFR
_OPCODE_NOTIFY = 4
_OPCODE_UPDATE = 5


def class_of(reply_type: str) -> str:
    """The log class of a reply type; META and UPDATE only match ``all``."""
    return _CLASS_OF.get(reply_type, ALL)


def typify(request: Request, wire: bytes) -> str:
    """The reply's type as CoreDNS names it (NOERROR, NXDOMAIN, NODATA, ...)."""
    if len(wire) < 12:
        return OTHERERROR
    opcode = (wire[2] >> 3) & 0xF
    if opcode == _OPCODE_UPDATE:
        return UPDATE
    if opcode == _OPCODE_NOTIFY or request.qtype in _ZONE_TRANSFERS:
        return META
    rcode = wire[3] & 0xF
    ancount = (wire[6] << 8) | wire[7]
    if ancount and rcode == 0:
        return NOERROR
    soa, ns = _authority_types(wire)
    if soa and rcode == 0:
        return NODATA
    if soa and rcode == 3:
        return NXDOMAIN
    if rcode in (2, 4):
        return SERVERROR
    if ns and rcode == 0:
        return DELEGATION
    if rcode == 0:
        return NOERROR
    return OTHERERROR


def _authority_types(wire: bytes) -> tuple[bool, int]:
    """Whether the authority section holds an SOA, and how many NS records."""
    qdcount = (wire[4] << 8) | wire[5]
    ancount = (wire[6] << 8) | wire[7]
    nscount = (wire[8] << 8) | wire[9]
    if not nscount:
        return False, 0
    soa = False
    ns = 0
    try:
        pos = 12
        for _ in range(qdcount):
            pos = _skip_name(wire, pos) + 4
        for _ in range(ancount):
            pos = _skip_record(wire, pos)
        for _ in range(nscount):
            end_name = _skip_name(wire, pos)
            rtype = (wire[end_name] << 8) | wire[end_name + 1]
            if rtype == _TYPE_SOA:
                soa = True
            elif rtype == _TYPE_NS:
                ns += 1
            pos = _skip_record(wire, pos)
    except IndexError:
        pass  # a truncated reply: judge by what could be read
    return soa, ns


def _skip_name(wire: bytes, pos: int) -> int:
    while True:
        length = wire[pos]
        if length == 0:
            return pos + 1
        if length & 0xC0:
            return pos + 2
        pos += length + 1


def _skip_record(wire: bytes, pos: int) -> int:
    pos = _skip_name(wire, pos)
    rdlength = (wire[pos + 8] << 8) | wire[pos + 9]
    return pos + 10 + rdlength
