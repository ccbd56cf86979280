"""local: RFC 6761 names (localhost and its reverse zones) answered locally, as CoreDNS's local."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from pycorefile import Directive, Plugin, Request, Result, SetupContext, SetupError, check_args
from pycorefile.zones import match_zone

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

ZONES = ("localhost.", "0.in-addr.arpa.", "127.in-addr.arpa.", "255.in-addr.arpa.")
TTL = 604800
LOOPBACK_PTR = "1.0.0.127.in-addr.arpa."
_SOA = "localhost. root.localhost. 1 0 0 0 604800"
_LOCALHOST = "localhost."
TYPE_A, TYPE_NS, TYPE_SOA, TYPE_PTR, TYPE_AAAA = 1, 2, 6, 12, 28


@dataclass(frozen=True)
class LocalConfig:
    localhost_prefix: bool = True
    """Also answer names *starting* with ``localhost.`` (CoreDNS's legacy default)."""


def parse_local(directives: Sequence[Directive]) -> LocalConfig:
    """``local { localhost_prefix on|off }``."""
    d = directives[0]
    check_args(d, 0, 0)
    prefix = True
    for opt in d.block or ():
        if opt.name != "localhost_prefix":
            raise SetupError(f"unknown property '{opt.name}'", opt)
        check_args(opt, 1, 1)
        value = opt.args[0]
        if value not in ("on", "off"):
            raise SetupError(f"localhost_prefix expects 'on' or 'off', got \"{value}\"", opt, 0)
        prefix = value == "on"
    return LocalConfig(prefix)


@dataclass
class LocalhostCount:
    """``coredns_local_localhost_requests_total``: one process-wide counter in CoreDNS,
    one per configuration here, shown by the first local plugin."""

    count: int = 0
    shown_by: object = None


def _rrset(owner: dns.name.Name, rtype: int, text: str) -> dns.rrset.RRset:
    return dns.rrset.from_text(
        owner, TTL, dns.rdataclass.IN, dns.rdatatype.RdataType.make(rtype), text
    )


class LocalPlugin(Plugin):
    """Answers ``localhost.``, names below it, and the 0/127/255 in-addr.arpa zones."""

    decides_by_question = True  # the cache after it keeps the server's fast path

    def __init__(self, config: LocalConfig, counter: LocalhostCount | None = None) -> None:
        self.config = config
        self.counter = counter if counter is not None else LocalhostCount()
        if self.counter.shown_by is None:
            self.counter.shown_by = self

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> LocalPlugin:
        counter = ctx.shared.setdefault("local.localhost_count", LocalhostCount())
        assert isinstance(counter, LocalhostCount)
        return cls(parse_local(directives), counter)

    def handle(self, request: Request) -> Result:
        name = request.name
        if len(name) > len(_LOCALHOST) and (
            name.endswith("." + _LOCALHOST)
            or (self.config.localhost_prefix and name.startswith(_LOCALHOST))
        ):
            self.counter.count += 1
            return self._localhost(request)
        zone = match_zone(name, ZONES)
        if zone is None:
            return self.next.handle(request)
        reply = request.reply()
        qname = request.qname
        qtype = request.qtype
        # The zone as spelled in the query (owner of the SOA of a name below it).
        zone_name = dns.name.Name(qname.labels[len(qname.labels) - zone.count(".") - 1 :])
        if name in ZONES:
            if qtype in (TYPE_A, TYPE_AAAA) and name == _LOCALHOST:
                address = "127.0.0.1" if qtype == TYPE_A else "::1"
                reply.answer.append(_rrset(qname, qtype, address))
            elif qtype == TYPE_SOA:
                reply.answer.append(_rrset(qname, TYPE_SOA, _SOA))
            elif qtype == TYPE_NS:
                reply.answer.append(_rrset(qname, TYPE_NS, _LOCALHOST))
            else:
                reply.authority.append(_rrset(qname, TYPE_SOA, _SOA))
        elif name == LOOPBACK_PTR:
            if qtype == TYPE_PTR:
                reply.answer.append(_rrset(qname, TYPE_PTR, _LOCALHOST))
            else:
                reply.authority.append(_rrset(zone_name, TYPE_SOA, _SOA))
        else:
            reply.set_rcode(dns.rcode.NXDOMAIN)
            reply.authority.append(_rrset(zone_name, TYPE_SOA, _SOA))
        return reply

    @staticmethod
    def _localhost(request: Request) -> dns.message.Message:
        """A name below ``localhost.`` (RFC 6761 §6.3): loopback, NODATA for other types."""
        reply = request.reply()
        qname = request.qname
        if request.qtype == TYPE_A:
            reply.answer.append(_rrset(qname, TYPE_A, "127.0.0.1"))
        elif request.qtype == TYPE_AAAA:
            reply.answer.append(_rrset(qname, TYPE_AAAA, "::1"))
        else:
            reply.authority.append(_rrset(qname, TYPE_SOA, _SOA))
        return reply

    def metrics(self) -> Iterable[Metric]:
        if self.counter.shown_by is not self:
            return ()
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(
            "coredns_local_localhost_requests",
            "Counter of special localhost subdomain requests.",
        )
        family.add_metric([], self.counter.count)
        return [family]
