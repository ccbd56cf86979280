"""whoami: answers with the client's address and port, as CoreDNS's whoami."""

from __future__ import annotations

from collections.abc import Sequence

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from pycorefile import Directive, Plugin, Reply, Request, SetupContext, check_args


class WhoamiPlugin(Plugin):
    """Reply with the client's IP (A or AAAA) and port (SRV) in the additional section."""

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> WhoamiPlugin:
        check_args(directives[0], 0, 0)
        return cls()

    def handle(self, request: Request) -> Reply:
        return self.answer(request)

    @staticmethod
    def answer(request: Request) -> Reply:
        reply = request.reply(authoritative=True)
        ip, port = request.client[0], request.client[1]
        qname = request.qname
        rtype = dns.rdatatype.AAAA if ":" in ip else dns.rdatatype.A
        reply.additional.append(dns.rrset.from_text(qname, 0, dns.rdataclass.IN, rtype, ip))
        srv_owner = dns.name.Name((f"_{request.proto}".encode(), *qname.labels))
        reply.additional.append(
            dns.rrset.from_text(srv_owner, 0, dns.rdataclass.IN, dns.rdatatype.SRV, f"0 0 {port} .")
        )
        return reply
