"""The server's fast path (``Plugin.serve_known``) answers exactly as the chain does.

Servers with the same cache and upstream: in one the cache heads the chain
(its hits take the fast path, no Request), in one *errors* comes first (a
wrapper transparent on success: the fast path still answers hits), in one
*log* comes first (it must see every query: all go through the chain). The
same queries must get the same replies (but for TTLs and record order) and
the same metrics.
"""

from __future__ import annotations

from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from pycorefile import Server
from pycorefile.testing import Upstream, make_query, query, serve
from tests.plugins.test_prometheus import Samples, scrape, value

RECORDS = {
    ("www.example.org.", "A"): ["192.0.2.1", "192.0.2.2"],
    ("www.example.org.", "AAAA"): ["2001:db8::1"],
    ("big.example.org.", "TXT"): ["x" * 200, "y" * 200, "z" * 200],
}

QUERIES = [
    # (name, type, options): each asked twice, so the second is a hit.
    ("www.example.org.", "A", {}),
    ("WwW.ExAmPlE.oRg.", "A", {}),  # the client's letter case comes back
    ("www.example.org.", "A", {"edns": True, "payload": 4096}),
    ("www.example.org.", "A", {"do": True}),
    ("www.example.org.", "A", {"cd": True}),
    ("www.example.org.", "A", {"rd": False}),
    ("www.example.org.", "AAAA", {"edns": True}),
    ("nothing.example.org.", "A", {}),  # a cached NXDOMAIN
    ("big.example.org.", "TXT", {}),  # over 512 bytes: truncated for a plain UDP client
    ("big.example.org.", "TXT", {"edns": True, "payload": 1232}),
]


def corefile(upstream: str, first: str) -> str:
    return (
        f".:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n {first}\n cache\n"
        f" forward . {upstream}\n}}\n"
    )


def canonical(msg: dns.message.Message) -> tuple[object, ...]:
    """The reply but for TTLs (servers store at different times) and record order."""
    sections = tuple(
        tuple(sorted(f"{rrset.name} {rrset.rdtype} {rd}" for rrset in section for rd in rrset))
        for section in (msg.answer, msg.authority, msg.additional)
    )
    opt = (msg.edns, msg.payload, msg.ednsflags) if msg.opt is not None else None
    return (msg.id, msg.flags, msg.rcode(), msg.question[0].to_text(), sections, opt)


async def ask_all(server: Server) -> list[tuple[tuple[object, ...], int, int]]:
    out = []
    for proto in ("udp", "tcp"):
        for name, rdtype, options in QUERIES:
            for qid in (0x1111, 0x2222):
                q = make_query(name, rdtype, **options)  # type: ignore[arg-type]
                q.id = qid
                r = await query(server, q, proto=proto)
                assert r.id == qid
                assert r.question[0].name.to_text() == name
                out.append((canonical(r), int(r.flags & dns.flags.TC), int(r.rcode())))
    return out


def counters(found: Samples) -> dict[str, float]:
    labels = {"server": "dns://127.0.0.1:0", "zones": ".", "view": ""}
    core = {"server": "dns://127.0.0.1:0", "zone": ".", "view": ""}
    return {
        "hits": value(found, "coredns_cache_hits_total", type="success", **labels)
        + value(found, "coredns_cache_hits_total", type="denial", **labels),
        "misses": value(found, "coredns_cache_misses_total", **labels),
        "by_cache": value(
            found, "coredns_dns_responses_total", rcode="NOERROR", plugin="cache", **core
        ),
        "udp_sizes": value(found, "coredns_dns_request_size_bytes_sum", proto="udp", **core),
        "udp_replies": value(found, "coredns_dns_response_size_bytes_sum", proto="udp", **core),
    }


async def test_fast_path_answers_exactly_as_the_chain() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with up.running():
        results = {}
        for first in ("", "errors", "log"):
            async with serve(corefile(up.address, first)) as server:
                assert server.config is not None
                block = server.config.blocks[0]
                assert (block.known is not None) == (first != "log"), "no fast path around log"
                assert block.known_by == ("" if first == "log" else "cache")
                replies = await ask_all(server)
                found, _ = await scrape(server)
            results[first] = (replies, counters(found))
    fast, behind_errors, chain = results[""], results["errors"], results["log"]
    assert fast[0] == chain[0] == behind_errors[0]
    assert fast[1] == chain[1] == behind_errors[1]
    assert fast[1]["hits"] > 0 and fast[1]["by_cache"] > 0
    rcodes = {rcode for _wire, _tc, rcode in fast[0]}
    assert rcodes == {dns.rcode.NOERROR, dns.rcode.NXDOMAIN}
    assert any(tc for _wire, tc, _rcode in fast[0])  # the plain UDP TXT query


@pytest.mark.parametrize("first", ["log", "acl {\n allow\n }"])
async def test_no_fast_path_when_another_plugin_must_see_every_query(first: str) -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with up.running(), serve(corefile(up.address, first)) as server:
        assert server.config is not None
        assert server.config.blocks[0].known is None


# -- autopath's stored answers ------------------------------------------------------------

MESH = {
    ("reviews.ns2.svc.cluster.local.", "A"): ["10.0.0.2"],
    ("reviews.ns2.svc.cluster.local.", "AAAA"): ["fd00::2"],
}
SEARCHED = [
    # An ndots:5 stub's first tries: found under the second search domain, found
    # nowhere (every try NXDOMAIN, with an SOA), and not below the search path.
    ("reviews.ns2.ns1.svc.cluster.local.", "A", {}),
    ("REVIEWS.ns2.ns1.svc.cluster.local.", "AAAA", {"edns": True}),
    ("reviews.ns2.ns1.svc.cluster.local.", "A", {"do": True}),
    ("missing.ns1.svc.cluster.local.", "A", {}),
    ("reviews.ns2.svc.cluster.local.", "A", {}),
]


def autopath_corefile(upstream: str, resolv: str, first: str) -> str:
    return (
        f".:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n {first}\n"
        f" autopath {resolv}\n cache\n forward . {upstream}\n}}\n"
    )


def comparable(found: Samples) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples that must not depend on the path taken (all but durations and the process)."""
    return {
        key: sample
        for key, sample in found.items()
        if key[0].startswith(("coredns_dns_", "coredns_cache_", "coredns_autopath_"))
        and "duration" not in key[0]
    }


async def test_autopath_stored_answers_take_the_fast_path_as_the_chain_does(
    tmp_path: Path,
) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search ns1.svc.cluster.local svc.cluster.local cluster.local\n")
    up = Upstream(records=dict(MESH), host="127.0.0.2")
    async with up.running():
        results = {}
        for first in ("", "errors", "log"):
            async with serve(autopath_corefile(up.address, str(resolv), first)) as server:
                assert server.config is not None
                block = server.config.blocks[0]
                assert block.known_by == ("" if first == "log" else "autopath")
                replies = []
                for proto in ("udp", "tcp"):
                    for name, rdtype, options in SEARCHED:
                        for qid in (0x1111, 0x2222, 0x3333):  # searched once, then stored
                            q = make_query(name, rdtype, **options)
                            q.id = qid
                            r = await query(server, q, proto=proto)
                            assert r.id == qid
                            replies.append(canonical(r))
                found, _ = await scrape(server)
            results[first] = (replies, comparable(found))
    fast, behind_errors, chain = results[""], results["errors"], results["log"]
    assert fast[0] == chain[0] == behind_errors[0]
    assert fast[1] == chain[1] == behind_errors[1]
    core = {"server": "dns://127.0.0.1:0", "zone": ".", "view": ""}
    by_autopath = value(
        chain[1], "coredns_dns_responses_total", rcode="NOERROR", plugin="autopath", **core
    )
    assert by_autopath >= 12  # the stored answers of the found name, each credited to autopath
    assert value(chain[1], "coredns_autopath_success_total", server="dns://127.0.0.1:0") == 18
