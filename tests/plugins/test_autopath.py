"""autopath against the real server over UDP and TCP, with small stand-in plugins.

The chain is ``autopath → apcache → aptable → apforward → Upstream``: a cache,
a mesh table that also supplies the search path (``@aptable``) and a forwarder,
each as small as the test needs, so autopath is tested on its own. The same
behaviour with the real cache, meshhosts and forward plugins is in
``test_autopath_chain.py``.
"""

# The shared fixtures (upstream, resolv) are imported by name for pytest to find,
# and taken by the tests as parameters of the same name.
# ruff: noqa: F811

from __future__ import annotations

import socket
import time
from collections.abc import AsyncIterator, Sequence

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio

from pycorefile import (
    Directive,
    Pending,
    Plugin,
    Reply,
    Request,
    Result,
    Server,
    SetupContext,
    SetupError,
    then,
)
from pycorefile._contract import settle
from pycorefile._registry import Registry
from pycorefile._wire import PreparedReply
from pycorefile.testing import Upstream, make_query, query, serve
from pycorefile_plugins.autopath import AutopathPlugin
from pycorefile_plugins.bind import BindPlugin
from tests.plugins.autopath_fixtures import (
    DB,
    EXT,
    PP,
    REVIEWS,
    S0,
    cname,
    config_of,
    records,
    upstream,  # noqa: F401
)

SEARCH = "ns1.svc.cluster.local svc.cluster.local cluster.local example.internal corp.test"
TABLE_TTL = 30
"""TTL of the stand-in table's records and of its negative answers (SOA minimum)."""


class TablePlugin(Plugin):
    """A mesh table: authoritative for its zones, answers at once, supplies the search path.

    ``aptable { zone Z; search D...; record NAME TYPE VALUE }``. Unknown names
    in its zones are NXDOMAIN, known names without the asked type NODATA (both
    with an SOA); names outside go to the next plugin.
    """

    after = "cache"

    def __init__(
        self, zones: list[str], search: list[str], records: dict[str, dict[int, list[str]]]
    ):
        self.zones = zones
        self.search = search
        self.records = records
        self.asked: list[tuple[str, int]] = []

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> TablePlugin:
        zones: list[str] = []
        search: list[str] = []
        records: dict[str, dict[int, list[str]]] = {}
        for line in directives[0].block or ():
            if line.name == "zone":
                zones.append(line.args[0].lower().rstrip(".") + ".")
            elif line.name == "search":
                search = [d.lower().rstrip(".") + "." for d in line.args]
            elif line.name == "record":
                name = line.args[0].lower().rstrip(".") + "."
                rdtype = dns.rdatatype.from_text(line.args[1])
                records.setdefault(name, {}).setdefault(rdtype, []).append(line.args[2])
            else:
                raise SetupError(f"unknown property '{line.name}'", line)
        return cls(zones, search, records)

    def search_path(self) -> list[str]:
        return self.search

    def answer(self, request: Request) -> Reply | None:
        name = request.name
        self.asked.append((name, request.qtype))
        known = self.records.get(name)
        if known is None and not any(name == z or name.endswith("." + z) for z in self.zones):
            return None
        reply = request.reply(dns.rcode.NOERROR if known else dns.rcode.NXDOMAIN, True)
        rdatas = (known or {}).get(request.qtype)
        if rdatas:
            reply.answer.append(
                dns.rrset.from_text(
                    request.qname,
                    TABLE_TTL,
                    "IN",
                    dns.rdatatype.RdataType.make(request.qtype),
                    *rdatas,
                )
            )
        else:
            zone = next(z for z in self.zones if name == z or name.endswith("." + z))
            soa = f"ns.{zone} hostmaster.{zone} 1 7200 1800 86400 {TABLE_TTL}"
            reply.authority.append(dns.rrset.from_text(zone, TABLE_TTL, "IN", "SOA", soa))
        return reply

    def handle(self, request: Request) -> Result:
        reply = self.answer(request)
        return self.next.handle(request) if reply is None else reply


class CachePlugin(Plugin):
    """A cache keyed by the request key, for the smallest TTL (5 s without one)."""

    before = "cache"

    def __init__(self) -> None:
        self.entries: dict[bytes, tuple[PreparedReply, float]] = {}

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> CachePlugin:
        return cls()

    def hit(self, request: Request) -> bytes | None:
        entry = self.entries.get(request.key)
        if entry is None:
            return None
        prepared, stored = entry
        age = int(time.monotonic() - stored)
        if age >= (prepared.min_ttl if prepared.ttls else 5):
            return None
        return prepared.aged(age).render(request.wire, request.name_end, request.edns, request.do)

    def store(self, request: Request, reply: Reply) -> Reply:
        """Keep a NOERROR or NXDOMAIN ``reply``; return it as it is."""
        prepared = (
            PreparedReply.from_message(reply)
            if isinstance(reply, dns.message.Message)
            else PreparedReply(reply)
        )
        if prepared.rcode in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            self.entries[request.key] = (prepared, time.monotonic())
        return reply

    def handle(self, request: Request) -> Result:
        hit = self.hit(request)
        if hit is not None:
            return hit
        return then(self.next.handle(request), lambda reply: self.store(request, reply))


class ForwardPlugin(Plugin):
    """Sends the query as it is to one upstream over UDP; SERVFAIL when none answers."""

    before = "forward"

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> ForwardPlugin:
        host, port = directives[0].args[0].rsplit(":", 1)
        return cls(host, int(port))

    def handle(self, request: Request) -> Result:
        return Pending(self.forward(request))

    async def forward(self, request: Request) -> Reply:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.connect((self.host, self.port))
            await sock.send(request.wire)
            with trio.move_on_after(2):
                return bytes(await sock.recv(65535))
        return request.error(dns.rcode.SERVFAIL)


def registry() -> Registry:
    return Registry.from_classes(
        {
            "bind": BindPlugin,
            "autopath": AutopathPlugin,
            "apcache": CachePlugin,
            "aptable": TablePlugin,
            "apforward": ForwardPlugin,
        }
    )


def corefile(upstream: Upstream, autopath: str = "autopath @aptable", search: str = SEARCH) -> str:
    return f"""\
.:0 {{
    bind 127.0.0.1
    {autopath}
    apcache
    aptable {{
        zone cluster.local
        search {search}
        record productpage.ns1.svc.cluster.local A 10.0.0.1
        record productpage.ns1.svc.cluster.local AAAA fd00::1
        record reviews.ns2.svc.cluster.local A 10.0.0.2
        record api.ns1.svc.cluster.local A 10.1.0.1
        record api.ns2.svc.cluster.local A 10.2.0.1
    }}
    apforward {upstream.address}
}}
"""


@pytest.fixture
async def server(upstream: Upstream) -> AsyncIterator[Server]:
    async with serve(corefile(upstream), registry=registry()) as srv:
        yield srv


CASES = [
    # (asked name, type, rcode, answer rows)
    # getent ahosts productpage.ns1.svc.cluster.local: the first search try.
    (PP + S0, "A", "NOERROR", [cname(PP + S0, PP), (PP, "A", "10.0.0.1")]),
    (PP + S0, "AAAA", "NOERROR", [cname(PP + S0, PP), (PP, "AAAA", "fd00::1")]),
    # productpage.ns1: its second search candidate is the Service.
    ("productpage.ns1." + S0, "A", "NOERROR",
     [cname("productpage.ns1." + S0, PP), (PP, "A", "10.0.0.1")]),
    # productpage: the first try is the Service itself, answered as it is.
    (PP, "A", "NOERROR", [(PP, "A", "10.0.0.1")]),
    # An external name: every search domain, then the name itself upstream.
    (EXT + S0, "A", "NOERROR", [cname(EXT + S0, EXT), (EXT, "A", "192.0.2.9")]),
    # ... which has no AAAA: the same CNAME with NODATA, so A and AAAA agree.
    (EXT + S0, "AAAA", "NOERROR", [cname(EXT + S0, EXT)]),
    # A name found under a later search domain, upstream.
    ("db." + S0, "AAAA", "NOERROR", [cname("db." + S0, DB), (DB, "AAAA", "2001:db8::10")]),
    # A mesh Service with an A record only, asked for AAAA: CNAME + NODATA.
    ("reviews.ns2." + S0, "AAAA", "NOERROR", [cname("reviews.ns2." + S0, REVIEWS)]),
    # Nothing anywhere: NXDOMAIN for the name asked.
    ("nothere." + S0, "A", "NXDOMAIN", []),
    ("nothere." + S0, "AAAA", "NXDOMAIN", []),
    # Not below the first search domain: not autopath's business.
    (EXT + "svc.cluster.local.", "A", "NXDOMAIN", []),
    # The first search domain itself: nothing to take apart.
    (S0, "A", "NXDOMAIN", []),
    # Only A and AAAA are searched.
    (EXT + S0, "MX", "NXDOMAIN", []),
    (EXT + S0, "TXT", "NXDOMAIN", []),
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
    reply = await query(server, name, rdtype, proto=proto)
    assert dns.rcode.to_text(reply.rcode()) == rcode
    assert reply.question[0].name.to_text() == name
    assert records(reply) == answer


async def test_nodata_carries_the_soa(server: Server) -> None:
    reply = await query(server, f"reviews.ns2.{S0}", "AAAA")
    assert [r.rdtype for r in reply.authority] == [dns.rdatatype.SOA]
    assert reply.authority[0].name.to_text() == "cluster.local."


async def test_cname_ttl_is_the_shortest_fact(server: Server, upstream: Upstream) -> None:
    """The alias holds while the names tried before stay NXDOMAIN: the table's 30 s."""
    reply = await query(server, f"www.external.test.{S0}", "A")
    assert reply.answer[0].rdtype == dns.rdatatype.CNAME
    assert reply.answer[0].ttl == TABLE_TTL
    assert reply.answer[1].ttl == upstream.ttl


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_letter_case_kept(server: Server, proto: str) -> None:
    """Question and CNAME owner as asked.

    Names sharing the asked name's tail point at the question, so that tail
    takes the asker's letter case too; DNS compares names case-insensitively.
    """
    asked = "ProductPage.NS1.ns1.SVC.cluster.LOCAL."
    for _ in range(2):  # built, then from what was kept
        reply = await query(server, asked, "A", proto=proto)
        assert reply.question[0].name.to_text() == asked
        rows = records(reply)
        assert rows[0][:2] == (asked, "CNAME")
        assert [(o.lower(), t, v.lower()) for o, t, v in rows] == [
            cname(asked.lower(), PP),
            (PP, "A", "10.0.0.1"),
        ]
    other = "productpage.ns1.NS1.svc.cluster.local."
    reply = await query(server, other, "A", proto=proto)
    assert records(reply)[0][:2] == (other, "CNAME")


async def test_edns_and_id_echoed(server: Server) -> None:
    for do in (False, True):
        q = make_query(f"productpage.ns1.{S0}", "A", edns=True, do=do)
        for _ in range(2):
            reply = await query(server, q)
            assert reply.id == q.id
            assert reply.edns == 0 and reply.payload == 1232
            assert bool(reply.ednsflags & dns.flags.DO) is do
            assert reply.flags & dns.flags.RD
    plain = await query(server, f"productpage.ns1.{S0}", "A")
    assert plain.edns == -1


async def test_no_leak_between_asked_names(server: Server) -> None:
    """The synthesized answer belongs to the name asked, never to the name it points at."""
    searched = await query(server, f"www.external.test.{S0}", "A")
    assert searched.answer[0].rdtype == dns.rdatatype.CNAME
    direct = await query(server, "www.external.test.", "A")
    assert records(direct) == [("www.external.test.", "A", "192.0.2.9")]
    other = await query(server, "www.external.test.svc.cluster.local.", "A")
    assert other.rcode() == dns.rcode.NXDOMAIN and not other.answer
    # A different prefix for the same base gets its own answer.
    short = await query(server, "reviews.ns1.svc.cluster.local.", "A")
    qualified = await query(server, f"reviews.ns2.{S0}", "A")
    assert short.rcode() == dns.rcode.NXDOMAIN and not short.answer
    assert records(qualified)[-1] == ("reviews.ns2.svc.cluster.local.", "A", "10.0.0.2")
    again = await query(server, "reviews.ns1.svc.cluster.local.", "A")
    assert again.rcode() == dns.rcode.NXDOMAIN and not again.answer


async def test_no_leak_between_search_paths(upstream: Upstream) -> None:
    """When the supplying plugin's search path changes, answers kept for the old one go."""
    search = "corp.test ns1.svc.cluster.local svc.cluster.local"
    async with serve(corefile(upstream, search=search), registry=registry()) as srv:
        (table,) = config_of(srv).find("aptable")
        assert isinstance(table, TablePlugin)
        first = await query(srv, "api.corp.test.", "A")
        assert records(first) == [
            cname("api.corp.test.", "api.ns1.svc.cluster.local."),
            ("api.ns1.svc.cluster.local.", "A", "10.1.0.1"),
        ]
        table.search = ["corp.test.", "ns2.svc.cluster.local.", "svc.cluster.local."]
        second = await query(srv, "api.corp.test.", "A")
        assert records(second) == [
            cname("api.corp.test.", "api.ns2.svc.cluster.local."),
            ("api.ns2.svc.cluster.local.", "A", "10.2.0.1"),
        ]


async def test_upstream_asked_once_per_ttl(server: Server, upstream: Upstream) -> None:
    """The tries go through the cache under their own names: repeats stay local."""
    for _ in range(3):
        for rdtype in ("A", "AAAA"):
            reply = await query(server, f"www.external.test.{S0}", rdtype)
            assert reply.answer[0].rdtype == dns.rdatatype.CNAME
    # The name asked directly, and from another search prefix, are cached too.
    await query(server, "www.external.test.", "A")
    await query(server, "www.external.test.corp.test.", "A")
    for name in ("www.external.test.", "www.external.test.example.internal.",
                 "www.external.test.corp.test."):  # fmt: skip
        for rdtype in ("A", "AAAA"):
            assert upstream.count(name, rdtype) == 1, (name, rdtype, upstream.queries)
    assert upstream.count() == 6


async def test_failure_is_not_hidden(upstream: Upstream) -> None:
    """A try that fails (SERVFAIL) ends the search with that failure, never NXDOMAIN."""

    def answer(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        failing = q.question[0].name.to_text().endswith(".corp.test.")
        r.set_rcode(dns.rcode.SERVFAIL if failing else dns.rcode.NXDOMAIN)
        return r

    upstream.handler = answer
    async with serve(corefile(upstream), registry=registry()) as srv:
        reply = await query(srv, f"www.external.test.{S0}", "A")
        assert reply.rcode() == dns.rcode.SERVFAIL
        assert not reply.answer
        assert reply.question[0].name.to_text() == f"www.external.test.{S0}"
        # The try before it was made; the name after it was not.
        assert upstream.count("www.external.test.example.internal.", "A") == 1
        assert upstream.count("www.external.test.corp.test.", "A") == 1
        assert upstream.count("www.external.test.", "A") == 0


async def test_zones_limit_autopath(upstream: Upstream) -> None:
    text = corefile(upstream, autopath="autopath example.org @aptable")
    async with serve(text, registry=registry()) as srv:
        reply = await query(srv, f"productpage.ns1.{S0}", "A")
        assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer
    text = corefile(upstream, autopath="autopath cluster.local @aptable")
    async with serve(text, registry=registry()) as srv:
        reply = await query(srv, f"productpage.ns1.{S0}", "A")
        assert records(reply)[0] == cname(f"productpage.ns1.{S0}", PP)


async def test_resolv_conf_file(upstream: Upstream, tmp_path: object) -> None:
    import pathlib

    assert isinstance(tmp_path, pathlib.Path)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver 127.0.0.1\nsearch {SEARCH}\noptions ndots:5\n")
    text = corefile(upstream, autopath=f"autopath {resolv}", search="")
    async with serve(text, registry=registry()) as srv:
        reply = await query(srv, f"www.external.test.{S0}", "A")
        assert records(reply)[-1] == ("www.external.test.", "A", "192.0.2.9")


async def test_plugin_without_search_path_fails_at_startup(upstream: Upstream) -> None:
    text = corefile(upstream, autopath="autopath @apcache")
    with pytest.RaisesGroup(
        pytest.RaisesExc(Exception, match="does not supply a search path"),
        flatten_subgroups=True,
        allow_unwrapped=True,
    ):
        async with serve(text, registry=registry()):
            pass


async def test_success_metric(server: Server) -> None:
    names = ["productpage.ns1." + S0, "productpage.ns1." + S0, PP, "nothere." + S0]
    for name in [*names, "nothere." + S0]:  # NXDOMAIN, built and then kept: no success
        await query(server, name, "A")
    (plugin,) = config_of(server).find("autopath")
    samples = [s for family in plugin.metrics() for s in family.samples]
    assert [(s.name, s.labels, s.value) for s in samples] == [
        ("coredns_autopath_success_total", {"server": "dns://127.0.0.1:0"}, 3.0)
    ]


# -- The chain without sockets: waiting or not gives the same answers --------------------


async def test_answers_without_waiting_when_the_chain_can(upstream: Upstream) -> None:
    """Tries answered from memory make the whole answer one given at once (not ``Pending``)."""
    async with serve(corefile(upstream), registry=registry()) as srv:
        (block,) = config_of(srv).blocks
        (table,) = config_of(srv).find("aptable")
        assert isinstance(table, TablePlugin)
        chain = block.chain
        route = next(iter(next(iter(config_of(srv).routes.values())).values()))

        def request(name: str, rdtype: str = "A") -> Request:
            req = Request.from_message(make_query(name, rdtype))
            req.route = route
            return req

        # All tries end in the table: answered now.
        now = chain.handle(request(f"productpage.ns1.{S0}"))
        assert not isinstance(now, Pending)
        assert records(dns.message.from_wire(_wire(now)))[0] == cname(f"productpage.ns1.{S0}", PP)
        # Some tries need the upstream: the search waits there, then goes on from
        # that try; the tries before it (answered now) are not asked again.
        table.asked.clear()
        waiting = chain.handle(request(f"www.external.test.{S0}"))
        assert isinstance(waiting, Pending)
        later = await settle(waiting)
        assert records(dns.message.from_wire(_wire(later)))[-1][1:] == ("A", "192.0.2.9")
        tried = [f"www.external.test.{d}." for d in SEARCH.split()] + ["www.external.test."]
        assert table.asked == [(name, dns.rdatatype.A) for name in tried]
        # Now every try is in the cache: answered now.
        again = chain.handle(request(f"www.external.test.{S0}"))
        assert not isinstance(again, Pending)
        assert _wire(again)[2:] == _wire(later)[2:]


def _wire(reply: Reply) -> bytes:
    return reply if isinstance(reply, bytes) else reply.to_wire()
