"""minimal: positive answers without their authority and additional sections (CoreDNS's minimal)."""

from __future__ import annotations

from collections.abc import Sequence

import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype

from pycorefile import Directive, Reply, Request, SetupContext, SetupError, Wrapper, check_args

_OPCODE_QUERY = 0
_NOT_MINIMIZED_TYPES = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)


def is_positive(msg: dns.message.Message) -> bool:
    """CoreDNS's ``response.Typify`` says NoError: a NOERROR reply with answers, or one with
    neither an SOA (NODATA) nor an NS (delegation) in its authority section.

    Zone transfers, NOTIFY and UPDATE are never positive answers here.
    """
    if msg.opcode() != _OPCODE_QUERY or msg.rcode() != dns.rcode.NOERROR:
        return False
    if msg.question and msg.question[0].rdtype in _NOT_MINIMIZED_TYPES:
        return False
    if msg.answer:
        return True
    return not any(rrset.rdtype in (dns.rdatatype.SOA, dns.rdatatype.NS) for rrset in msg.authority)


def minimize(reply: Reply) -> Reply:
    """The reply without authority and additional records when it is a positive answer.

    The OPT record (EDNS) stays. Bytes are parsed only when there is
    something to remove (a NOERROR reply with authority or additional
    records); an unparsable reply goes back unchanged.
    """
    if isinstance(reply, dns.message.Message):
        msg = reply
    else:
        wire = bytes(reply)
        if len(wire) < 12 or wire[3] & 0x0F != 0:
            return reply
        nscount = (wire[8] << 8) | wire[9]
        arcount = (wire[10] << 8) | wire[11]
        if nscount == 0 and arcount == 0:
            return reply
        try:
            msg = dns.message.from_wire(wire, ignore_trailing=True)
        except Exception:
            return reply
        if not (msg.authority or msg.additional):
            return reply
    if not is_positive(msg):
        return reply
    msg.authority.clear()
    msg.additional.clear()
    return msg


class MinimalPlugin(Wrapper):
    """Strips authority and additional from the positive answers of the plugins after it."""

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> MinimalPlugin:
        d = directives[0]
        check_args(d, 0, 0)
        if d.block:
            raise SetupError(f"unknown property '{d.block[0].name}'", d.block[0])
        return cls()

    def on_reply(self, request: Request, reply: Reply) -> Reply:
        return minimize(reply)
