"""local against the real server: RFC 6761 names answered locally, as CoreDNS's local."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import pytest

from pycorefile import CorefileError, load_config
from pycorefile.testing import Upstream, query, scrape, serve

NOERROR, NXDOMAIN = dns.rcode.NOERROR, dns.rcode.NXDOMAIN
SOA = "localhost. root.localhost. 1 0 0 0 604800"


def section(rrsets: list[dns.rrset.RRset]) -> list[str]:
    return [f"{r.name} {r.ttl} {dns.rdatatype.to_text(r.rdtype)} {rd}" for r in rrsets for rd in r]


# name, type, rcode, answer, authority
TABLE: list[tuple[str, str, int, list[str], list[str]]] = [
    ("localhost", "A", NOERROR, ["localhost. 604800 A 127.0.0.1"], []),
    ("localhost", "AAAA", NOERROR, ["localhost. 604800 AAAA ::1"], []),
    ("LocalHost", "A", NOERROR, ["LocalHost. 604800 A 127.0.0.1"], []),
    ("localhost", "SOA", NOERROR, [f"localhost. 604800 SOA {SOA}"], []),
    ("localhost", "NS", NOERROR, ["localhost. 604800 NS localhost."], []),
    ("localhost", "MX", NOERROR, [], [f"localhost. 604800 SOA {SOA}"]),
    # Below localhost. (RFC 6761 6.3): loopback too.
    ("app.localhost", "A", NOERROR, ["app.localhost. 604800 A 127.0.0.1"], []),
    ("a.b.localhost", "AAAA", NOERROR, ["a.b.localhost. 604800 AAAA ::1"], []),
    ("app.localhost", "TXT", NOERROR, [], [f"app.localhost. 604800 SOA {SOA}"]),
    # The legacy prefix (on by default).
    ("localhost.example.org", "A", NOERROR, ["localhost.example.org. 604800 A 127.0.0.1"], []),
    # The reverse zones.
    ("1.0.0.127.in-addr.arpa", "PTR", NOERROR,
     ["1.0.0.127.in-addr.arpa. 604800 PTR localhost."], []),
    ("1.0.0.127.in-addr.arpa", "A", NOERROR, [], [f"127.in-addr.arpa. 604800 SOA {SOA}"]),
    ("2.0.0.127.In-Addr.Arpa", "PTR", NXDOMAIN, [], [f"127.In-Addr.Arpa. 604800 SOA {SOA}"]),
    ("127.in-addr.arpa", "SOA", NOERROR, [f"127.in-addr.arpa. 604800 SOA {SOA}"], []),
    ("127.in-addr.arpa", "A", NOERROR, [], [f"127.in-addr.arpa. 604800 SOA {SOA}"]),
    ("0.in-addr.arpa", "NS", NOERROR, ["0.in-addr.arpa. 604800 NS localhost."], []),
    ("1.0.0.0.in-addr.arpa", "PTR", NXDOMAIN, [], [f"0.in-addr.arpa. 604800 SOA {SOA}"]),
    ("255.255.255.255.in-addr.arpa", "PTR", NXDOMAIN, [], [f"255.in-addr.arpa. 604800 SOA {SOA}"]),
]  # fmt: skip


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_answers_as_coredns(proto: str) -> None:
    async with Upstream(host="127.0.0.5").running() as up:
        text = f".:0 {{\n  prometheus 127.0.0.1:0\n  local\n  forward . {up.address}\n}}\n"
        async with serve(text) as server:
            for name, rdtype, rcode, answer, authority in TABLE:
                reply = await query(server, name, rdtype, proto=proto)
                assert reply.rcode() == rcode, (name, rdtype)
                assert section(reply.answer) == answer, (name, rdtype)
                assert section(reply.authority) == authority, (name, rdtype)
                assert not reply.flags & (dns.flags.AA | dns.flags.RA), (name, rdtype)
            assert [q for q in up.queries if q[1] != "HINFO"] == []
            # Other names go on.
            assert (await query(server, "example.org", "A", proto=proto)).rcode() == NXDOMAIN
            assert up.count("example.org", "A") == 1
            metrics = await scrape(server)
    # Names below localhost. and the legacy prefix: 4 of the table.
    assert metrics.value("coredns_local_localhost_requests_total") == 4


async def test_localhost_prefix_off() -> None:
    async with Upstream(host="127.0.0.5").running() as up:
        text = f".:0 {{\n  local {{\n    localhost_prefix off\n  }}\n  forward . {up.address}\n}}\n"
        async with serve(text) as server:
            reply = await query(server, "localhost.example.org", "A")
            assert reply.rcode() == NXDOMAIN and up.count("localhost.example.org") == 1
            reply = await query(server, "x.localhost", "A")
            assert section(reply.answer) == ["x.localhost. 604800 A 127.0.0.1"]


@pytest.mark.parametrize(
    ("body", "message", "line", "column"),
    [
        ("local x", "plugin/local: Wrong argument count", 2, 8),
        ("local {\n  localhost_prefix maybe\n }",
         "plugin/local: localhost_prefix expects 'on' or 'off', got \"maybe\"", 3, 20),
        ("local {\n  localhost_prefix\n }", "plugin/local: Wrong argument count", 3, 3),
        ("local {\n  other on\n }", "plugin/local: unknown property 'other'", 3, 3),
    ],
)  # fmt: skip
def test_setup_errors(body: str, message: str, line: int, column: int) -> None:
    with pytest.raises(CorefileError) as caught:
        load_config(f".:53 {{\n {body}\n}}\n")
    assert caught.value.message.startswith(message)
    assert (caught.value.line, caught.value.column) == (line, column)


def test_local_any_and_chaos_keep_the_fast_path_of_the_cache_after_them() -> None:
    text = ".:53 {\n errors\n local\n any\n chaos\n cache\n forward . 127.0.0.1:9\n}\n"
    assert load_config(text).blocks[0].known_by == "cache"
    # log before them needs a Request: the chain runs.
    assert load_config(text.replace(" errors\n", " errors\n log\n")).blocks[0].known is None


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_answers_with_the_cache_on_the_fast_path(proto: str) -> None:
    records = {("example.org.", "A"): ["192.0.2.1"]}
    async with Upstream(records=records, host="127.0.0.5").running() as up:
        text = (
            f".:0 {{\n  prometheus 127.0.0.1:0\n  local\n  any\n  cache\n"
            f"  forward . {up.address}\n}}\n"
        )
        async with serve(text) as server:
            for _ in range(3):
                reply = await query(server, "localhost", "A", proto=proto)
                assert section(reply.answer) == ["localhost. 604800 A 127.0.0.1"]
                reply = await query(server, "example.org", "ANY", proto=proto)
                assert reply.answer[0].ttl == 8482
                reply = await query(server, "example.org", "A", proto=proto)
                assert [rd.to_text() for rd in reply.answer[0]] == ["192.0.2.1"]
            metrics = await scrape(server)
    assert metrics.value("coredns_dns_responses_total", plugin="local") == 3
    assert metrics.value("coredns_dns_responses_total", plugin="any") == 3
    assert metrics.value("coredns_dns_responses_total", plugin="cache") == 2
    assert metrics.value("coredns_cache_hits_total") == 2
    assert up.count("example.org", "A") == 1 and up.count("localhost") == 0
