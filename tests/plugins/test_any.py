"""any against the real server: RFC 8482's HINFO answer to ANY queries."""

from __future__ import annotations

import dns.flags
import dns.rcode
import pytest

from pycorefile import CorefileError, load_config
from pycorefile.testing import Upstream, query, scrape, serve


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_any_gets_hinfo_and_other_types_go_on(proto: str) -> None:
    records = {("example.org.", "A"): ["192.0.2.1"]}
    up = Upstream(records=records, host="127.0.0.4")
    async with (
        up.running(),
        serve(f".:0 {{\n  any\n  forward . 127.0.0.4:{up.port}\n}}\n") as server,
    ):
        reply = await query(server, "Example.ORG", "ANY", proto=proto, edns=True)
        assert reply.rcode() == dns.rcode.NOERROR
        [rrset] = reply.answer
        assert str(rrset.name) == "Example.ORG." and rrset.ttl == 8482
        assert [rd.to_text() for rd in rrset] == ['"ANY obsoleted" "See RFC 8482"']
        assert not reply.flags & (dns.flags.AA | dns.flags.RA)
        assert reply.edns == 0 and not reply.authority
        assert up.count("example.org", "ANY") == 0
        plain = await query(server, "example.org", "A", proto=proto)
        assert [rd.to_text() for rd in plain.answer[0]] == ["192.0.2.1"]


async def test_any_answers_before_the_cache() -> None:
    # any sits outside cache (plugin.cfg order): an ANY query never reaches it.
    async with serve(".:0 {\n  prometheus 127.0.0.1:0\n  cache\n  any\n}\n") as server:
        for _ in range(2):
            assert (await query(server, "example.org", "ANY")).answer[0].ttl == 8482
        metrics = await scrape(server)
        assert metrics.value("coredns_cache_misses_total") == 0
        assert metrics.value("coredns_dns_responses_total", plugin="any") == 2


def test_setup_errors() -> None:
    with pytest.raises(CorefileError) as caught:
        load_config(".:53 {\n any x\n}\n")
    assert caught.value.message.startswith("plugin/any: Wrong argument count")
    assert (caught.value.line, caught.value.column) == (2, 6)
