"""acl after autopath: every answer, stored or not, goes only to clients the acl lets through.

CoreDNS's chain is ``autopath → acl → cache``: each name autopath tries passes
the acl. Here autopath also keeps its answers; one kept for a client the acl
allows must never reach a client it does not (16.7). Two clients on their own
loopback addresses; the real autopath, acl, cache, meshhosts and forward.
"""

# The shared fixtures (upstream, resolv) are imported by name for pytest to find,
# and taken by the tests as parameters of the same name.
# ruff: noqa: F811

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import dns.exception
import dns.message
import dns.rcode
import pytest

from pycorefile import Request, Server
from pycorefile._contract import settle
from pycorefile.testing import Upstream, make_query, serve
from tests.plugins.autopath_fixtures import (
    DB,
    EXT,
    PP,
    S0,
    autopath_of,
    cname,
    records,
    resolv,  # noqa: F401
    running_upstream,
)
from tests.plugins.test_acl import ask, extended_errors

ALLOWED = "127.0.0.2"
OTHER = "127.0.0.3"


def corefile(upstream: Upstream, resolv: Path, acl: str) -> str:
    return f"""\
.:0 {{
    bind 127.0.0.1
    autopath @meshhosts
    {acl}
    cache
    meshhosts {{
        10.0.0.1 productpage.ns1.svc.cluster.local
        namespace ns1
        ttl 30
        resolv_conf {resolv}
        fallthrough
    }}
    forward . {upstream.address}
}}
"""


ONLY_ALLOWED = "acl {\n        allow net 127.0.0.2\n        %s\n    }"


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with running_upstream("127.0.0.9") as up:  # not a client address of the tests
        yield up


async def chain_serve(server: Server, name: str, client: str) -> dns.message.Message:
    """The query through the block's chain from its top, awaited as the server does."""
    assert server.config is not None
    (block,) = server.config.blocks
    route = next(iter(next(iter(server.config.routes.values())).values()))
    request = Request.from_message(make_query(name, "A", edns=True), (client, 5300))
    request.route = route
    reply = await settle(block.chain.handle(request))
    wire = reply if isinstance(reply, bytes) else reply.to_wire()
    return dns.message.from_wire(wire)


WARMED = [
    # (asked name, what the allowed client gets) -- a mesh name (every try answered at
    # once), a name only the upstream knows (tries wait), a search that ends in NXDOMAIN.
    (PP + S0, [cname(PP + S0, PP), (PP, "A", "10.0.0.1")]),
    (EXT + S0, [cname(EXT + S0, EXT), (EXT, "A", "192.0.2.9")]),
    ("db." + S0, [cname("db." + S0, DB), (DB, "A", "192.0.2.10")]),
    ("nothere." + S0, []),
]


@pytest.mark.parametrize(("name", "answer"), WARMED)
async def test_autopath_stored_answer_never_bypasses_acl_block(
    upstream: Upstream, resolv: Path, name: str, answer: list[tuple[str, str, str]]
) -> None:
    """As CoreDNS, where every try passes the acl: REFUSED with EDE Blocked, on every path."""
    async with serve(corefile(upstream, resolv, ONLY_ALLOWED % "block")) as server:
        for _ in range(2):  # the search, then the stored answer
            warm = await ask(server, name, source=ALLOWED)
            assert records(warm) == answer
        assert autopath_of(server)._stored  # the answer is kept
        for proto in ("udp", "tcp"):
            refused = await ask(server, name, source=OTHER, proto=proto, edns=True)
            assert refused.rcode() == dns.rcode.REFUSED, proto
            assert not refused.answer and extended_errors(refused) == [15]
        served = await chain_serve(server, name, OTHER)
        assert served.rcode() == dns.rcode.REFUSED and not served.answer
        again = await ask(server, name, source=ALLOWED)  # still kept for the allowed one
        assert records(again) == answer and again.rcode() == warm.rcode()


async def test_autopath_stored_answer_never_bypasses_acl_filter_or_drop(
    upstream: Upstream, resolv: Path
) -> None:
    name = PP + S0
    for action in ("filter", "drop"):
        async with serve(corefile(upstream, resolv, ONLY_ALLOWED % action)) as server:
            for _ in range(2):
                assert records(await ask(server, name, source=ALLOWED))[0] == cname(name, PP)
            if action == "drop":
                with pytest.raises(dns.exception.Timeout):
                    await ask(server, name, source=OTHER, timeout=0.5)
                continue
            filtered = await ask(server, name, source=OTHER, edns=True)
            assert filtered.rcode() == dns.rcode.NOERROR and not filtered.answer
            assert extended_errors(filtered) == [17]


async def test_autopath_stored_answer_checked_for_every_name_its_search_asked(
    upstream: Upstream, resolv: Path
) -> None:
    """The asked name is allowed, the name the search found is not: REFUSED, as CoreDNS."""
    acl = "acl example.internal {\n        block net 127.0.0.3\n    }"
    name = "db." + S0
    async with serve(corefile(upstream, resolv, acl)) as server:
        for _ in range(2):
            assert records(await ask(server, name, source=ALLOWED))[0] == cname(name, DB)
        refused = await ask(server, name, source=OTHER, edns=True)
        assert refused.rcode() == dns.rcode.REFUSED and not refused.answer
        assert extended_errors(refused) == [15]  # the later try's Blocked, as CoreDNS
        assert refused.question[0].name.to_text() == name
        # A search that stops before example.internal is still shared.
        short = "productpage.ns1." + S0
        assert records(await ask(server, short, source=ALLOWED))[0] == cname(short, PP)
        assert records(await ask(server, short, source=OTHER))[0] == cname(short, PP)
        # One that passes through it is refused, as each try would be in CoreDNS.
        assert (await ask(server, PP + S0, source=ALLOWED)).answer
        assert (await ask(server, PP + S0, source=OTHER)).rcode() == dns.rcode.REFUSED


async def test_autopath_never_keeps_an_answer_the_acl_shaped_for_one_client(
    upstream: Upstream, resolv: Path
) -> None:
    """A filtered try is that client's answer alone: the allowed client then gets the real one."""
    acl = "acl example.internal {\n        filter net 127.0.0.3\n    }"
    name = "db." + S0
    async with serve(corefile(upstream, resolv, acl)) as server:
        filtered = await ask(server, name, source=OTHER, edns=True)
        # As CoreDNS: the filtered try's reply, under the asked name, no CNAME.
        assert filtered.rcode() == dns.rcode.NOERROR and not filtered.answer
        assert extended_errors(filtered) == [17]
        assert filtered.question[0].name.to_text() == name
        bare = await ask(server, name, source=OTHER)  # no EDNS, so no EDE to tell it by
        assert bare.rcode() == dns.rcode.NOERROR and not bare.answer and bare.edns == -1
        assert not autopath_of(server)._stored
        real = await ask(server, name, source=ALLOWED)
        assert records(real) == [cname(name, DB), (DB, "A", "192.0.2.10")]
