"""The sidecar chain on repeats: what each kind of reply costs the second time.

autopath + cache + meshhosts (authoritative for ``cluster.local``) + forward,
as in the benchmark's sidecar scenario. A stub resolver's first
search-expanded query (``BASE.ns1.svc.cluster.local``) is asked three times
per row; the table pins how often the upstream is asked, how the cache counts
the tries (each exactly once, also when a query goes on to wait for the
upstream), and whether a repeat is answered at once (the chain returns no ``Pending``).

What is kept follows CoreDNS, whose cache sits in front of its autopath and so
keeps autopath's answers: never a REFUSED, never an NXDOMAIN without an SOA; a
NODATA without an SOA for 5 s, a SERVFAIL for 5 s.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from pycorefile import Pending, Request, Server
from pycorefile._contract import settle
from pycorefile.testing import Upstream, make_query, query, serve
from tests.plugins.autopath_fixtures import config_of
from tests.plugins.test_cache import http_get
from tests.process import free_port

S0 = "ns1.svc.cluster.local."
SEARCH = "ns1.svc.cluster.local svc.cluster.local cluster.local"
EXT_SOA = "ns.ext.test. hostmaster.ext.test. 1 3600 600 86400 60"
LOOKUPS = 3


def upstream_answer(q: dns.message.Message) -> dns.message.Message:
    """Replies by the name's first label, one kind each (the table's upstream column).

    ``www``: A, and NODATA with an SOA. ``bare``: A, and NODATA without an SOA
    (dnsmasq's for a ``--local`` domain). ``refused``: A, and REFUSED (dnsmasq's
    for a type it has no server to forward to). ``servfail``: SERVFAIL.
    ``nxbare``: NXDOMAIN without an SOA. Anything else: NXDOMAIN with an SOA.
    """
    question = q.question[0]
    label = question.name.labels[0].decode().lower()
    reply = dns.message.make_response(q)
    reply.flags |= dns.flags.RA
    soa = dns.rrset.from_text("ext.test.", 300, "IN", "SOA", EXT_SOA)
    if label == "servfail":
        reply.set_rcode(dns.rcode.SERVFAIL)
    elif label not in ("www", "bare", "refused"):
        reply.set_rcode(dns.rcode.NXDOMAIN)
        if label != "nxbare":
            reply.authority.append(soa)
    elif question.rdtype == dns.rdatatype.A:
        reply.answer.append(dns.rrset.from_text(question.name, 300, "IN", "A", "192.0.2.9"))
    elif label == "refused":
        reply.set_rcode(dns.rcode.REFUSED)
    elif label == "www":
        reply.authority.append(soa)
    return reply


def corefile(upstream: str, resolv: Path, mesh: bool = True) -> str:
    meshhosts = (
        "    meshhosts cluster.local {\n"
        "        10.0.0.1 productpage.ns1.svc.cluster.local\n"
        "        10.0.0.2 reviews.ns2.svc.cluster.local\n"
        "        namespace ns1\n"
        "        reload 0\n"
        "    }\n"
    )
    return (
        ".:0 {\n    bind 127.0.0.1\n    prometheus 127.0.0.1:0\n"
        f"    autopath {resolv}\n    cache\n{meshhosts if mesh else ''}"
        f"    forward . {upstream}\n}}\n"
    )


@pytest.fixture
def resolv(tmp_path: Path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text(f"search {SEARCH}\noptions ndots:5\n")
    return path


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with Upstream(handler=upstream_answer, host="127.0.0.2").running() as up:
        yield up


async def cache_counts(server: Server) -> dict[str, float]:
    """``coredns_cache_requests_total`` and friends, scraped from the metrics endpoint."""
    body = await http_get(server.http_address("127.0.0.1", 0), "/metrics")
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name.startswith("coredns_cache_") and sample.name.endswith("_total"):
                kind = sample.labels.get("type")
                key = sample.name[len("coredns_cache_") : -len("_total")]
                key = f"{key}_{kind}" if kind else key
                out[key] = out.get(key, 0) + sample.value
    return out


async def answers_at_once(server: Server, name: str, rdtype: str) -> bool:
    """True when the chain answers the query without waiting (returns no ``Pending``).

    A query that waits is then seen through, so nothing is left half done.
    """
    config = config_of(server)
    (block,) = config.blocks
    route = next(iter(next(iter(config.routes.values())).values()))
    request = Request.from_message(make_query(name, rdtype))
    request.route = route
    result = block.chain.handle(request)
    if isinstance(result, Pending):
        await settle(result)
        return False
    return True


CASES = [
    # (base, type, rcode, answer types, upstream asked, cache requests, cache misses, at once)
    # The mesh's own names: the table answers, the upstream is never asked.
    ("productpage", "A", "NOERROR", ["A"], 0, 3, 1, True),
    ("productpage", "AAAA", "NOERROR", [], 0, 3, 1, True),  # NODATA with the table's SOA
    ("reviews.ns2", "A", "NOERROR", ["CNAME", "A"], 0, 2, 2, True),
    ("reviews.ns2", "AAAA", "NOERROR", ["CNAME"], 0, 2, 2, True),
    # External names: three NXDOMAINs from the table, then the upstream.
    ("www.ext.test", "A", "NOERROR", ["CNAME", "A"], 1, 4, 4, True),
    ("www.ext.test", "AAAA", "NOERROR", ["CNAME"], 1, 4, 4, True),  # NODATA with an SOA
    ("bare.ext.test", "AAAA", "NOERROR", ["CNAME"], 1, 4, 4, True),  # NODATA, no SOA: 5 s
    ("nothere", "A", "NXDOMAIN", [], 1, 4, 4, True),
    ("nxbare.ext.test", "A", "NXDOMAIN", [], 1, 4, 4, True),  # the table's NXDOMAIN is kept
    ("servfail.ext.test", "A", "SERVFAIL", [], 1, 12, 4, True),  # the cache's 5 s
    # Never kept (as CoreDNS): every lookup asks again and waits; each try counted once.
    ("refused.ext.test", "AAAA", "REFUSED", [], LOOKUPS, 4 * LOOKUPS, 3 + LOOKUPS, False),
]  # fmt: skip


@pytest.mark.parametrize(
    ("base", "rdtype", "rcode", "types", "asked", "requests", "misses", "at_once"), CASES
)
async def test_repeats(
    upstream: Upstream,
    resolv: Path,
    base: str,
    rdtype: str,
    rcode: str,
    types: list[str],
    asked: int,
    requests: int,
    misses: int,
    at_once: bool,
) -> None:
    name = f"{base}.{S0}"
    async with serve(corefile(upstream.address, resolv)) as server:
        for _ in range(LOOKUPS):
            reply = await query(server, name, rdtype)
            assert dns.rcode.to_text(reply.rcode()) == rcode
            assert [dns.rdatatype.to_text(r.rdtype) for r in reply.answer] == types
            if types[:1] == ["CNAME"]:
                assert reply.answer[0].name.to_text() == name
        assert upstream.count(base, rdtype) == asked
        counts = await cache_counts(server)
        assert counts["requests"] == requests
        assert counts["misses"] == misses
        assert (
            counts["requests"] == counts["misses"] + counts["hits_success"] + counts["hits_denial"]
        )
        assert await answers_at_once(server, name, rdtype) is at_once


DENIALS = [
    # (base, upstream asked for each try): the first try's NXDOMAIN is the answer.
    ("nx", 1),  # with an SOA: kept, by the cache and by autopath
    ("nxbare", LOOKUPS),  # without: CoreDNS keeps none, so every lookup asks again
]


@pytest.mark.parametrize(("base", "asked"), DENIALS)
async def test_all_nxdomain_kept_only_with_an_soa(
    upstream: Upstream, tmp_path: Path, base: str, asked: int
) -> None:
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search corp.test\noptions ndots:5\n")
    async with serve(corefile(upstream.address, resolv, mesh=False)) as server:
        for _ in range(LOOKUPS):
            reply = await query(server, f"{base}.corp.test.", "A")
            assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer
        assert upstream.count(f"{base}.corp.test.", "A") == asked
        assert upstream.count(f"{base}.", "A") == asked
        assert await answers_at_once(server, f"{base}.corp.test.", "A") is (asked == 1)


async def responses_by_plugin(server: Server) -> dict[tuple[str, str], float]:
    """``coredns_dns_responses_total`` by (rcode, plugin), scraped from the metrics endpoint."""
    body = await http_get(server.http_address("127.0.0.1", 0), "/metrics")
    out: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == "coredns_dns_responses_total":
                key = (sample.labels["rcode"], sample.labels["plugin"])
                out[key] = out.get(key, 0) + sample.value
    return out


async def test_a_search_is_credited_to_autopath(upstream: Upstream, tmp_path: Path) -> None:
    """The reply of a search is autopath's (the ``plugin`` label), also when its first try
    waited for the upstream; a name that exists as asked is its answerer's, as in CoreDNS."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search corp.test ns1.svc.cluster.local\noptions ndots:5\n")
    async with serve(corefile(upstream.address, resolv)) as server:
        # The first try (upstream) is NXDOMAIN, the second one is the mesh's.
        found = await query(server, "productpage.corp.test.", "A")
        assert [dns.rdatatype.to_text(r.rdtype) for r in found.answer] == ["CNAME", "A"]
        # Every try NXDOMAIN: the first one's (upstream) reply is the answer.
        missing = await query(server, "nx.corp.test.", "A")
        assert missing.rcode() == dns.rcode.NXDOMAIN
        # The name as asked exists upstream: that reply as it is.
        direct = await query(server, "www.corp.test.", "A")
        assert [dns.rdatatype.to_text(r.rdtype) for r in direct.answer] == ["A"]
        assert upstream.count("productpage.corp.test.", "A") == 1
        assert await responses_by_plugin(server) == {
            ("NOERROR", "autopath"): 1,
            ("NXDOMAIN", "autopath"): 1,
            ("NOERROR", "forward"): 1,
        }


# -- dnsmasq as the upstream, as the benchmark runs it --------------------------------

DNSMASQ_HOST = "127.0.0.11"


@contextmanager
def dnsmasq(log: Path, *extra: str) -> Iterator[str]:
    """dnsmasq answering ``ext.test`` with ``--address`` (A only), queries logged."""
    port = free_port(DNSMASQ_HOST)
    binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    proc = subprocess.Popen(
        [
            binary, "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
            f"--port={port}", f"--listen-address={DNSMASQ_HOST}", "--bind-interfaces",
            "--pid-file=", "--user=root", "--cache-size=0", "--log-queries",
            f"--log-facility={log}", "--address=/ext.test/192.0.2.2", "--local=/cluster.local/",
            *extra,
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        yield f"{DNSMASQ_HOST}:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=5)


async def wait_answering(address: str) -> None:
    host, port = address.rsplit(":", 1)
    with trio.fail_after(5):
        while True:
            try:
                await query((host, int(port)), "www.ext.test", "A", timeout=0.2)
                return
            except (dns.exception.Timeout, OSError):
                await trio.sleep(0.05)


UPSTREAM_AAAA = [
    # (extra dnsmasq options, rcode of AAAA, upstream asked for it)
    ((), "REFUSED", LOOKUPS),  # --address alone: AAAA is refused (no server to forward to)
    (("--local=/ext.test/",), "NOERROR", 1),  # --local too: NODATA without an SOA, kept 5 s
]


@pytest.mark.parametrize(("extra", "rcode", "asked"), UPSTREAM_AAAA)
async def test_dnsmasq_upstream(
    resolv: Path, tmp_path: Path, extra: tuple[str, ...], rcode: str, asked: int
) -> None:
    log = tmp_path / "dnsmasq.log"
    with dnsmasq(log, *extra) as address:
        await wait_answering(address)
        async with serve(corefile(address, resolv)) as server:
            name = "www1.ext.test." + S0
            for _ in range(LOOKUPS):
                reply = await query(server, name, "AAAA")
                assert dns.rcode.to_text(reply.rcode()) == rcode
                a = await query(server, name, "A")
                assert [dns.rdatatype.to_text(r.rdtype) for r in a.answer] == ["CNAME", "A"]
        lines = log.read_text().splitlines()
    assert sum("query[AAAA] www1.ext.test " in line for line in lines) == asked
    assert sum("query[A] www1.ext.test " in line for line in lines) == 1
