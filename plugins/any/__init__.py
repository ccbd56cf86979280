"""any: answers ANY queries with one HINFO record, as RFC 8482 allows (CoreDNS's any)."""

from __future__ import annotations

from collections.abc import Sequence

import dns.rdataclass
import dns.rdatatype
import dns.rrset

from pycorefile import Directive, Plugin, Request, Result, SetupContext, SetupError, check_args

TYPE_ANY = 255
TTL = 8482


class AnyPlugin(Plugin):
    """A query of type ANY gets ``HINFO "ANY obsoleted" "See RFC 8482"``; others go on."""

    decides_by_question = True  # the cache after it keeps the server's fast path

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> AnyPlugin:
        d = directives[0]
        check_args(d, 0, 0)
        if d.block:
            raise SetupError(f"unknown property '{d.block[0].name}'", d.block[0])
        return cls()

    def handle(self, request: Request) -> Result:
        if request.qtype != TYPE_ANY:
            return self.next.handle(request)
        reply = request.reply()
        reply.answer.append(
            dns.rrset.from_text(
                request.qname,
                TTL,
                dns.rdataclass.IN,
                dns.rdatatype.HINFO,
                '"ANY obsoleted" "See RFC 8482"',
            )
        )
        return reply
