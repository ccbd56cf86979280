"""minimal against the real server: positive answers lose authority and additional records."""

from __future__ import annotations

import dns.message
import dns.rcode
import dns.rrset
import pytest

from pycorefile import CorefileError, load_config
from pycorefile.testing import Upstream, query, scrape, serve

NOERROR, NXDOMAIN = dns.rcode.NOERROR, dns.rcode.NXDOMAIN
SOA = "ns.test. hostmaster.test. 1 3600 600 86400 60"


def full_reply(q: dns.message.Message) -> dns.message.Message:
    """Answers, NODATA, NXDOMAIN and a delegation, each with authority and additional."""
    r = dns.message.make_response(q)
    name = q.question[0].name.to_text().lower()
    glue = dns.rrset.from_text("ns.example.org.", 60, "IN", "A", "192.0.2.53")
    if name.startswith("answer."):
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.1"))
        r.authority.append(dns.rrset.from_text("example.org.", 60, "IN", "NS", "ns.example.org."))
        r.additional.append(glue)
    elif name.startswith("nodata."):
        r.authority.append(dns.rrset.from_text("example.org.", 60, "IN", "SOA", SOA))
    elif name.startswith("delegated."):
        r.authority.append(dns.rrset.from_text(name, 60, "IN", "NS", "ns.example.org."))
        r.additional.append(glue)
    elif name.startswith("bare."):
        r.additional.append(glue)  # NOERROR, no answer, no SOA or NS: CoreDNS's NoError
    else:
        r.set_rcode(NXDOMAIN)
        r.authority.append(dns.rrset.from_text("example.org.", 60, "IN", "SOA", SOA))
    return r


# name, (answer, authority, additional) record counts after minimal
TABLE = [
    ("answer.example.org", NOERROR, (1, 0, 0)),
    ("bare.example.org", NOERROR, (0, 0, 0)),
    ("nodata.example.org", NOERROR, (0, 1, 0)),
    ("delegated.example.org", NOERROR, (0, 1, 1)),
    ("missing.example.org", NXDOMAIN, (0, 1, 0)),
]


def counts(reply: dns.message.Message) -> tuple[int, int, int]:
    """Records in the answer, authority and additional sections (OPT not counted)."""

    def size(section: list[dns.rrset.RRset]) -> int:
        return sum(len(rrset) for rrset in section)

    return size(reply.answer), size(reply.authority), size(reply.additional)


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_only_positive_answers_are_stripped(proto: str) -> None:
    up = Upstream(host="127.0.0.6", handler=full_reply)
    async with up.running(), serve(f".:0 {{\n  minimal\n  forward . {up.address}\n}}\n") as server:
        for name, rcode, expected in TABLE:
            reply = await query(server, name, "A", proto=proto, edns=True)
            assert reply.rcode() == rcode, name
            assert counts(reply) == expected, name
            assert reply.edns == 0, name  # the OPT record stays


async def test_the_cache_keeps_the_stripped_reply() -> None:
    async with Upstream(host="127.0.0.6", handler=full_reply).running() as up:
        text = (
            f".:0 {{\n  prometheus 127.0.0.1:0\n  cache 30\n  minimal\n"
            f"  forward . {up.address}\n}}\n"
        )
        async with serve(text) as server:
            first = await query(server, "answer.example.org", "A")
            second = await query(server, "answer.example.org", "A")
            assert counts(first) == counts(second) == (1, 0, 0)
            metrics = await scrape(server)
            assert metrics.value("coredns_cache_hits_total") == 1
            assert up.count("answer.example.org", "A") == 1


def test_setup_errors() -> None:
    with pytest.raises(CorefileError) as caught:
        load_config(".:53 {\n minimal yes\n}\n")
    assert caught.value.message.startswith("plugin/minimal: Wrong argument count")
    assert (caught.value.line, caught.value.column) == (2, 10)
