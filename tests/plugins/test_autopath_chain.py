"""autopath with the real plugins behind it: cache, meshhosts (search path) and forward.

The same table of lookups as ``test_autopath.py``, over UDP and TCP, now with
``autopath @meshhosts``; the upstream is a ``pycorefile.testing.Upstream`` that
counts what reaches it.
"""

# The shared fixtures (upstream, resolv) are imported by name for pytest to find,
# and taken by the tests as parameters of the same name.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trio

from pycorefile import Pending, Request, Server
from pycorefile.testing import Upstream, make_query, query, serve
from pycorefile_plugins.autopath import AutopathPlugin
from tests.plugins.autopath_fixtures import (
    DB,
    EXT,
    PP,
    REVIEWS,
    S0,
    cname,
    config_of,
    records,
    resolv,  # noqa: F401
    upstream,  # noqa: F401
)

MESH_TTL = 30


def corefile(upstream: Upstream, resolv: Path, autopath: str = "autopath @meshhosts") -> str:
    return f"""\
.:0 {{
    bind 127.0.0.1
    {autopath}
    cache
    meshhosts {{
        10.0.0.1 productpage.ns1.svc.cluster.local
        fd00::1 productpage.ns1.svc.cluster.local
        10.0.0.2 reviews.ns2.svc.cluster.local
        namespace ns1
        ttl {MESH_TTL}
        resolv_conf {resolv}
        reload 100ms
        fallthrough
    }}
    forward . {upstream.address}
}}
"""


@pytest.fixture
async def server(upstream: Upstream, resolv: Path) -> AsyncIterator[Server]:
    async with serve(corefile(upstream, resolv)) as srv:
        yield srv


CASES = [
    # (asked name, type, rcode, answer rows)
    (PP + S0, "A", "NOERROR", [cname(PP + S0, PP), (PP, "A", "10.0.0.1")]),
    (PP + S0, "AAAA", "NOERROR", [cname(PP + S0, PP), (PP, "AAAA", "fd00::1")]),
    ("productpage.ns1." + S0, "A", "NOERROR",
     [cname("productpage.ns1." + S0, PP), (PP, "A", "10.0.0.1")]),
    (PP, "A", "NOERROR", [(PP, "A", "10.0.0.1")]),
    (PP, "AAAA", "NOERROR", [(PP, "AAAA", "fd00::1")]),
    (EXT + S0, "A", "NOERROR", [cname(EXT + S0, EXT), (EXT, "A", "192.0.2.9")]),
    (EXT + S0, "AAAA", "NOERROR", [cname(EXT + S0, EXT)]),
    ("db." + S0, "A", "NOERROR", [cname("db." + S0, DB), (DB, "A", "192.0.2.10")]),
    ("reviews.ns2." + S0, "A", "NOERROR", [cname("reviews.ns2." + S0, REVIEWS),
                                           (REVIEWS, "A", "10.0.0.2")]),
    ("reviews.ns2." + S0, "AAAA", "NOERROR", [cname("reviews.ns2." + S0, REVIEWS)]),
    ("nothere." + S0, "A", "NXDOMAIN", []),
    ("nothere." + S0, "AAAA", "NXDOMAIN", []),
    (EXT + "svc.cluster.local.", "A", "NXDOMAIN", []),
    (EXT + S0, "MX", "NXDOMAIN", []),
]  # fmt: skip


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize(("name", "rdtype", "rcode", "answer"), CASES)
async def test_answers(
    server: Server,
    proto: str,
    name: str,
    rdtype: str,
    rcode: str,
    answer: list[tuple[str, str, str]],
) -> None:
    for _ in range(2):  # the first time, then from what the cache and autopath kept
        reply = await query(server, name, rdtype, proto=proto)
        assert dns.rcode.to_text(reply.rcode()) == rcode
        assert reply.question[0].name.to_text() == name
        assert records(reply) == answer


async def test_nodata_from_the_mesh_table_carries_its_soa(server: Server) -> None:
    reply = await query(server, "reviews.ns2." + S0, "AAAA")
    assert records(reply) == [cname("reviews.ns2." + S0, REVIEWS)]
    assert [r.rdtype for r in reply.authority] == [dns.rdatatype.SOA]


async def test_cname_ttl(server: Server, upstream: Upstream) -> None:
    """The negative TTL of the names tried before (Upstream's SOA minimum: 60 s) bounds it."""
    reply = await query(server, EXT + S0, "A")
    assert reply.answer[0].rdtype == dns.rdatatype.CNAME
    assert 0 < reply.answer[0].ttl <= 60
    mesh = await query(server, "productpage.ns1." + S0, "A")
    assert 0 < mesh.answer[0].ttl <= MESH_TTL


async def test_upstream_asked_once_per_ttl(server: Server, upstream: Upstream) -> None:
    for _ in range(3):
        for rdtype in ("A", "AAAA"):
            reply = await query(server, EXT + S0, rdtype)
            assert reply.answer[0].rdtype == dns.rdatatype.CNAME
    # The target asked directly, and the client's own later tries, come from the cache.
    await query(server, EXT, "A")
    await query(server, EXT + "corp.test.", "AAAA")
    await query(server, EXT + "svc.cluster.local.", "A")
    tried = [EXT + d for d in (S0, "svc.cluster.local.", "cluster.local.", "example.internal.",
                               "corp.test.")] + [EXT]  # fmt: skip
    for name in tried:
        for rdtype in ("A", "AAAA"):
            assert upstream.count(name, rdtype) == 1, (name, rdtype, upstream.queries)
    asked = [(n, t) for n, t, _ in upstream.queries if t in ("A", "AAAA")]
    assert len(asked) == 2 * len(tried)  # nothing else (forward's own probes aside)


async def test_no_leak_between_asked_names(server: Server) -> None:
    searched = await query(server, EXT + S0, "A")
    assert records(searched)[0] == cname(EXT + S0, EXT)
    direct = await query(server, EXT, "A")
    assert records(direct) == [(EXT, "A", "192.0.2.9")]
    assert direct.question[0].name.to_text() == EXT
    sibling = await query(server, "reviews." + S0, "A")  # reviews in ns1: there is none
    assert sibling.rcode() == dns.rcode.NXDOMAIN and not sibling.answer
    qualified = await query(server, "reviews.ns2." + S0, "A")
    assert records(qualified)[0] == cname("reviews.ns2." + S0, REVIEWS)
    again = await query(server, "reviews." + S0, "A")
    assert again.rcode() == dns.rcode.NXDOMAIN and not again.answer


async def test_search_path_follows_resolv_conf(server: Server, resolv: Path) -> None:
    """meshhosts re-reads resolv.conf; autopath forgets what it kept for the old path."""
    before = await query(server, "db." + S0, "A")
    assert records(before)[0] == cname("db." + S0, DB)
    resolv.write_text("nameserver 127.0.0.1\nsearch corp.test\noptions ndots:5\n")
    # meshhosts looks at the file every 100 ms: wait (bounded) for the new path.
    with trio.move_on_after(5):
        while True:
            after = await query(server, "db." + S0, "A")
            if after.rcode() == dns.rcode.NXDOMAIN:
                break
            await trio.sleep(0.05)
    assert after.rcode() == dns.rcode.NXDOMAIN and not after.answer


async def test_mesh_answers_without_waiting(server: Server) -> None:
    """Once the tries are cached, a searched answer is given at once (not ``Pending``)."""
    (block,) = config_of(server).blocks
    route = next(iter(next(iter(config_of(server).routes.values())).values()))

    def request(name: str) -> Request:
        req = Request.from_message(make_query(name, "A"))
        req.route = route
        return req

    name = "productpage.ns1." + S0
    await query(server, name, "A")
    now = block.chain.handle(request(name))
    assert not isinstance(now, Pending)
    wire = now if isinstance(now, bytes) else now.to_wire()
    assert records(dns.message.from_wire(wire))[0] == cname(name, PP)
    (autopath,) = config_of(server).find("autopath")
    assert isinstance(autopath, AutopathPlugin)
    autopath._stored.clear()
    rebuilt = block.chain.handle(request(name))
    assert not isinstance(rebuilt, Pending)
    wire = rebuilt if isinstance(rebuilt, bytes) else rebuilt.to_wire()
    assert records(dns.message.from_wire(wire))[0] == cname(name, PP)


async def test_without_autopath_nothing_is_rewritten(upstream: Upstream, resolv: Path) -> None:
    async with serve(corefile(upstream, resolv, autopath="")) as srv:
        reply = await query(srv, "productpage.ns1." + S0, "A")
        assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer
