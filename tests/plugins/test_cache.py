"""cache: every rule against the real server, with a counting upstream on loopback.

The upstream is ``pycorefile.testing.Upstream``; between it and the cache sits
``relay``, a small test plugin that passes the query's bytes to the upstream
over UDP and returns its reply's bytes (SERVFAIL when it does not answer), so
these tests do not depend on the forward plugin (``test_cache_forward.py``
repeats the essentials with it). Time is moved with a fake clock.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import ClassVar

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from pycorefile import (
    Directive,
    Pending,
    Plugin,
    PluginError,
    Reply,
    Request,
    Result,
    Server,
    SetupContext,
)
from pycorefile._registry import Registry
from pycorefile.testing import Upstream, make_query, query, query_wire, serve
from pycorefile_plugins.bind import BindPlugin
from pycorefile_plugins.cache import CachePlugin, Entry
from pycorefile_plugins.errors import ErrorsPlugin
from pycorefile_plugins.prometheus import PrometheusPlugin


class RelayPlugin(Plugin):
    """``relay HOST:PORT [pluginerror]``: the query's bytes to an upstream over UDP, its
    reply back. With ``pluginerror``, an upstream that fails (no answer, SERVFAIL) raises
    ``PluginError`` instead, as forward does."""

    after = "cache"
    timeout = 1.0

    def __init__(self, host: str, port: int, plugin_error: bool = False) -> None:
        self.host = host
        self.port = port
        self.plugin_error = plugin_error

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> RelayPlugin:
        args = directives[0].args
        host, port = args[0].rsplit(":", 1)
        return cls(host, int(port), args[1:] == ("pluginerror",))

    def handle(self, request: Request) -> Result:
        return Pending(self._answer(request))

    async def _answer(self, request: Request) -> Reply:
        reply = await self._relay(request)
        if self.plugin_error and (reply is None or reply[3] & 0xF == dns.rcode.SERVFAIL):
            raise PluginError("relay: the upstream failed")
        return reply if reply is not None else request.error(dns.rcode.SERVFAIL)

    async def _relay(self, request: Request) -> bytes | None:
        try:
            with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
                await sock.connect((self.host, self.port))
                await sock.send(request.wire)
                with trio.move_on_after(self.timeout):
                    while True:
                        data = await sock.recv(65535)
                        if data[:2] == request.wire[:2]:
                            return data
        except OSError:
            pass
        return None


class TablePlugin(Plugin):
    """``table``: answers A queries without waiting (``address``, TTL 60), counting them
    and noting whether each asked with the AD bit."""

    after = "cache"
    calls = 0
    address = "192.0.2.80"
    asked_ad: ClassVar[list[bool]] = []

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> TablePlugin:
        return cls()

    @classmethod
    def reset(cls) -> None:
        cls.calls = 0
        cls.address = "192.0.2.80"
        cls.asked_ad = []

    def handle(self, request: Request) -> Result:
        TablePlugin.calls += 1
        TablePlugin.asked_ad.append(bool(request.flags & dns.flags.AD))
        reply = request.reply(authoritative=True)
        reply.answer.append(dns.rrset.from_text(request.qname, 60, "IN", "A", self.address))
        return reply


REGISTRY = Registry.from_classes(
    {"bind": BindPlugin, "cache": CachePlugin, "relay": RelayPlugin, "table": TablePlugin}
)

RECORDS = {
    ("a.example.org.", "A"): ["192.0.2.1"],
    ("b.example.org.", "A"): ["192.0.2.2"],
    ("c.example.org.", "A"): ["192.0.2.3"],
    ("d.example.org.", "A"): ["192.0.2.4"],
    ("www.example.net.", "A"): ["198.51.100.1"],
}


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def corefile(up: Upstream, cache: str = "cache", zone: str = ".", relay: str = "") -> str:
    relay_line = f"relay {up.host}:{up.port} {relay}".rstrip()
    return f"{zone}:0 {{\n    bind 127.0.0.1\n    {cache}\n    {relay_line}\n}}\n"


@asynccontextmanager
async def cached(
    cache: str = "cache",
    records: dict[tuple[str, str], list[str]] | None = None,
    relay: str = "",
    **kw: object,
) -> AsyncIterator[tuple[Server, Upstream, CachePlugin, Clock]]:
    """A running server whose cache uses a fake clock, before a counting upstream."""
    table = dict(RECORDS if records is None else records)  # tests change their copy
    upstream = Upstream(records=table, **kw)  # type: ignore[arg-type]
    async with (
        upstream.running() as up,
        serve(corefile(up, cache, relay=relay), registry=REGISTRY) as server,
    ):
        plugin = cache_of(server)
        clock = Clock()
        plugin.clock = clock
        yield server, up, plugin, clock


def cache_of(server: Server) -> CachePlugin:
    assert server.config is not None
    (plugin,) = server.config.find("cache")
    assert isinstance(plugin, CachePlugin)
    return plugin


def ttls(reply: dns.message.Message) -> list[int]:
    return [rrset.ttl for section in (reply.answer, reply.authority) for rrset in section]


async def wait_for(condition: Callable[[], bool], seconds: float = 3.0) -> None:
    """Wait (bounded) for a background refresh to have done something."""
    with trio.fail_after(seconds):
        while not condition():
            await trio.sleep(0.01)


# -- Hits -------------------------------------------------------------------------------


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_hit_does_not_reach_upstream(proto: str) -> None:
    async with cached() as (server, up, _, _):
        first = await query(server, "a.example.org", "A", proto=proto)
        second = await query(server, "a.example.org", "A", proto=proto)
    assert up.count("a.example.org", "A") == 1
    assert first.answer == second.answer
    assert second.answer[0][0].address == "192.0.2.1"


async def test_hit_echoes_id_and_question_case() -> None:
    async with cached() as (server, up, _, _):
        await query(server, "a.example.org", "A")
        q = make_query("A.ExAmPle.ORG", "A")
        q.id = 0x4242
        reply = await query(server, q)
    assert up.count() == 1
    assert reply.id == 0x4242
    assert reply.question[0].name.to_text() == "A.ExAmPle.ORG."
    assert reply.flags & dns.flags.QR and reply.flags & dns.flags.RD


async def test_ttls_count_down_with_the_clock() -> None:
    async with cached() as (server, up, _, clock):
        first = await query(server, "a.example.org", "A")
        clock.advance(7.6)
        later = await query(server, "a.example.org", "A")
        clock.advance(292)  # 299.6 s in: one second left
        last = await query(server, "a.example.org", "A")
        clock.advance(0.5)  # expired
        await query(server, "a.example.org", "A")
    assert (ttls(first), ttls(later), ttls(last)) == ([300], [293], [1])
    assert up.count() == 2


async def test_each_record_keeps_its_own_ttl() -> None:
    def chain(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text("www.example.org.", 100, "IN", "CNAME", "web.x."))
        r.answer.append(dns.rrset.from_text("web.x.", 40, "IN", "A", "192.0.2.9"))
        r.additional.append(dns.rrset.from_text("ns.x.", 2, "IN", "A", "192.0.2.53"))
        return r

    async with cached(handler=chain) as (server, up, _, clock):
        first = await query(server, "www.example.org", "A")
        clock.advance(3)
        second = await query(server, "www.example.org", "A")
        clock.advance(2)  # 5 s: the 2 s record was raised to the 5 s minimum, so expired
        await query(server, "www.example.org", "A")
    assert [r.ttl for r in first.answer] == [100, 40]
    assert first.additional[0].ttl == 5
    assert [r.ttl for r in second.answer] == [97, 37]
    assert second.additional[0].ttl == 2
    assert up.count() == 2


async def test_max_ttl_caps_every_record() -> None:
    async with cached("cache 60", ttl=86400) as (server, up, _, clock):
        first = await query(server, "a.example.org", "A")
        clock.advance(59)
        await query(server, "a.example.org", "A")
        clock.advance(1)
        await query(server, "a.example.org", "A")
    assert ttls(first) == [60]
    assert up.count() == 2


# -- EDNS, DO and CD ----------------------------------------------------------------------


async def test_opt_record_is_the_clients_not_the_upstreams() -> None:
    def big_opt(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.use_edns(0, payload=4000, options=[dns.edns.GenericOption(dns.edns.NSID, b"up")])
        r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.5"))
        return r

    async with cached(handler=big_opt) as (server, up, _, _):
        with_edns = await query(server, "a.example.org", "A", edns=True, payload=4096)
        plain = await query(server, "a.example.org", "A")
        again = await query(server, "a.example.org", "A", edns=True, payload=1400)
    assert up.count() == 1
    assert plain.edns == -1 and not plain.options
    for reply in (with_edns, again):
        assert reply.edns == 0
        assert reply.payload == 1232
        assert reply.options == ()
        assert not reply.ednsflags & dns.flags.DO


async def test_client_edns_options_do_not_change_the_key() -> None:
    async with cached() as (server, up, _, _):
        await query(server, "a.example.org", "A")
        cookie = dns.edns.CookieOption(b"\x01" * 8, b"")
        q = dns.message.make_query("a.example.org", "A", use_edns=0, payload=4096, options=[cookie])
        with_cookie = await query(server, q)
        small = await query(server, "a.example.org", "A", edns=True, payload=512)
    assert up.count() == 1
    assert with_cookie.answer[0][0].address == small.answer[0][0].address == "192.0.2.1"
    assert with_cookie.options == ()  # the client's cookie is not echoed from the cache


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_do_and_cd_are_cached_apart(proto: str) -> None:
    def mark(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q, our_payload=1232)
        do = bool(q.ednsflags & dns.flags.DO)
        cd = bool(q.flags & dns.flags.CD)
        text = f'"do={int(do)} cd={int(cd)}"'
        r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "TXT", text))
        return r

    variants = [(False, False), (True, False), (False, True), (True, True)]
    async with cached(handler=mark) as (server, up, _, _):
        for _ in range(2):
            for do, cd in variants:
                reply = await query(server, "t.example.org", "TXT", proto=proto, do=do, cd=cd)
                assert reply.answer[0][0].strings == (f"do={int(do)} cd={int(cd)}".encode(),)
                assert bool(reply.ednsflags & dns.flags.DO) == do
                assert bool(reply.flags & dns.flags.CD) == cd
    assert up.count() == 4


async def test_ad_bit_is_cleared_for_clients_without_ad_or_do() -> None:
    def validated(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q, our_payload=1232)
        r.flags |= dns.flags.AD
        r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.5"))
        return r

    async with cached(handler=validated) as (server, _, _, _):
        plain = [await query(server, "a.example.org", "A") for _ in range(2)]
        dnssec = [await query(server, "a.example.org", "A", do=True) for _ in range(2)]
    assert all(not r.flags & dns.flags.AD for r in plain)
    assert all(r.flags & dns.flags.AD for r in dnssec)


# -- Denials, failures, what is never stored ------------------------------------------------


async def test_nxdomain_and_nodata_are_cached_apart_with_the_soa_ttl() -> None:
    async with cached("cache {\n denial 100 50\n }", ttl=600) as (server, up, plugin, clock):
        nx = await query(server, "missing.example.org", "A")
        nodata = await query(server, "a.example.org", "AAAA")
        clock.advance(20)
        nx2 = await query(server, "missing.example.org", "A")
        nodata2 = await query(server, "a.example.org", "AAAA")
        address = await query(server, "a.example.org", "A")  # the name exists: not denied
    assert nx.rcode() == nx2.rcode() == dns.rcode.NXDOMAIN
    assert nodata.rcode() == nodata2.rcode() == dns.rcode.NOERROR
    assert not nodata2.answer and nodata2.authority[0].rdtype == dns.rdatatype.SOA
    assert ttls(nx) == ttls(nodata) == [50]  # the SOA's 600 (MINIMUM 60) capped by denial's TTL
    assert ttls(nx2) == ttls(nodata2) == [30]
    assert address.answer[0][0].address == "192.0.2.1"
    assert (up.count("missing.example.org"), up.count("a.example.org", "AAAA")) == (1, 1)
    assert (len(plugin.denial), len(plugin.success)) == (2, 1)


async def test_negative_ttl_comes_from_the_soa() -> None:
    def soa_30(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.set_rcode(dns.rcode.NXDOMAIN)
        soa = "ns.x. host.x. 1 3600 600 86400 900"
        r.authority.append(dns.rrset.from_text("example.org.", 30, "IN", "SOA", soa))
        return r

    async with cached(handler=soa_30) as (server, up, _, clock):
        first = await query(server, "gone.example.org", "A")
        clock.advance(29.5)
        await query(server, "gone.example.org", "A")
        clock.advance(1)
        await query(server, "gone.example.org", "A")
    assert ttls(first) == [30]
    assert up.count() == 2


async def test_nxdomain_without_soa_is_not_cached() -> None:
    def bare(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.set_rcode(dns.rcode.NXDOMAIN)
        return r

    async with cached(handler=bare) as (server, up, _, _):
        for _ in range(2):
            assert (await query(server, "x.example.org", "A")).rcode() == dns.rcode.NXDOMAIN
    assert up.count() == 2


async def test_servfail_is_cached_only_for_the_servfail_duration() -> None:
    async with cached("cache {\n servfail 2s\n }", mode="servfail") as (server, up, _, clock):
        replies = [await query(server, "a.example.org", "A") for _ in range(3)]
        clock.advance(2.1)
        replies.append(await query(server, "a.example.org", "A"))
    assert all(r.rcode() == dns.rcode.SERVFAIL for r in replies)
    assert up.count() == 2


@pytest.mark.parametrize(("cache", "expected"), [("cache", 1), ("cache {\n servfail 0\n }", 3)])
async def test_servfail_zero_disables_servfail_caching(cache: str, expected: int) -> None:
    async with cached(cache, mode="servfail") as (server, up, _, _):
        for _ in range(3):
            await query(server, "a.example.org", "A")
    assert up.count() == expected


async def test_servfail_does_not_replace_a_good_answer() -> None:
    async with cached("cache {\n prefetch 1 1m 90%\n }") as (server, up, plugin, clock):
        await query(server, "a.example.org", "A")
        up.mode = "servfail"
        clock.advance(31)  # 269 s of 300 left: at most 90%, so a hit prefetches
        await query(server, "a.example.org", "A")  # the refresh gets SERVFAIL
        await wait_for(lambda: up.count() == 2)
        await wait_for(lambda: not _only_entry(plugin).refreshing)
        reply = await query(server, "a.example.org", "A")
    assert reply.rcode() == dns.rcode.NOERROR
    assert reply.answer[0][0].address == "192.0.2.1"


async def test_truncated_replies_are_not_cached() -> None:
    def truncated(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.TC
        return r

    async with cached(handler=truncated) as (server, up, plugin, _):
        for _ in range(2):
            reply = await query(server, "a.example.org", "A")
            assert reply.flags & dns.flags.TC
    assert up.count() == 2
    assert len(plugin.success) == len(plugin.denial) == 0


@pytest.mark.parametrize("mode", ["refused"])
async def test_other_errors_are_not_cached(mode: str) -> None:
    async with cached(mode=mode) as (server, up, plugin, _):
        for _ in range(2):
            assert (await query(server, "a.example.org", "A")).rcode() == dns.rcode.REFUSED
    assert up.count() == 2
    assert len(plugin.success) == len(plugin.denial) == 0


async def test_reply_for_another_question_is_dropped() -> None:
    def wrong(q: dns.message.Message) -> dns.message.Message:
        other = dns.message.make_query("evil.example.com", "A")
        other.id = q.id
        r = dns.message.make_response(other)
        r.answer.append(dns.rrset.from_text("evil.example.com.", 300, "IN", "A", "203.0.113.66"))
        return r

    async with cached(handler=wrong) as (server, up, plugin, _):
        for _ in range(2):
            reply = await query_wire(server, make_query("a.example.org", "A").to_wire())
            assert reply is not None and b"evil" in reply  # passed on, not stored
        assert up.count() == 2
        assert len(plugin.success) == 0
        drops = _sample(plugin, "coredns_cache_drops")
    assert drops == 2


async def test_dangling_cname_chain_is_not_cached() -> None:
    def dangling(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "CNAME", "x.y."))
        return r

    async with cached(handler=dangling) as (server, up, _, _):
        for _ in range(2):
            await query(server, "a.example.org", "A")
    assert up.count() == 2


# -- Capacity and eviction ------------------------------------------------------------------


async def test_capacity_and_eviction() -> None:
    async with cached("cache {\n success 3\n }") as (server, up, plugin, _):
        for name in ("a", "b", "c"):
            await query(server, f"{name}.example.org", "A")
        await query(server, "a.example.org", "A")  # a is hit: it gets a second chance
        await query(server, "d.example.org", "A")  # full: b (oldest, never hit) goes
        assert len(plugin.success) == 3
        await query(server, "a.example.org", "A")
        assert up.count("a.example.org") == 1
        await query(server, "b.example.org", "A")  # evicted: asked again, c goes
        assert up.count("b.example.org") == 2
        evictions = _sample(plugin, "coredns_cache_evictions", type="success")
        entries = _sample(plugin, "coredns_cache_entries", type="success")
    assert (evictions, entries) == (2, 3)


# -- Prefetch ------------------------------------------------------------------------------


async def test_prefetch_refreshes_a_popular_entry_before_it_expires() -> None:
    async with cached("cache {\n prefetch 2 1m 50%\n }", ttl=10) as (server, up, plugin, clock):
        await query(server, "a.example.org", "A")  # stored at t=0, lives 10 s
        await query(server, "a.example.org", "A")  # hit 1 at t=0
        clock.advance(6)
        await query(server, "a.example.org", "A")  # hit 2, 4 s left <= 5 s: prefetch
        await wait_for(lambda: up.count() == 2)
        await wait_for(lambda: _only_entry(plugin).stored == clock.now)
        clock.advance(4.5)  # t=10.5: the first entry expired at t=10
        reply = await query(server, "a.example.org", "A")
        prefetches = _sample(plugin, "coredns_cache_prefetch")
    assert up.count() == 2
    assert ttls(reply) == [6]  # stored at t=6 with 10 s
    assert prefetches == 1


async def test_no_prefetch_for_unpopular_entries() -> None:
    async with cached("cache {\n prefetch 3 1m 50%\n }", ttl=10) as (server, up, _, clock):
        await query(server, "a.example.org", "A")
        clock.advance(6)
        await query(server, "a.example.org", "A")  # only one hit
        await trio.sleep(0.1)
    assert up.count() == 1


# -- serve_stale ---------------------------------------------------------------------------


async def test_serve_stale_answers_when_the_upstream_is_gone() -> None:
    upstream = Upstream(records=dict(RECORDS), ttl=10)
    async with serve(
        corefile_for(upstream_port=await _port_of(upstream), cache="cache {\n serve_stale\n }"),
        registry=REGISTRY,
    ) as server:
        plugin = cache_of(server)
        clock = Clock()
        plugin.clock = clock
        async with upstream.running():
            first = await query(server, "a.example.org", "A")
        clock.advance(60)  # expired 50 s ago; the upstream has stopped
        stale = [await query(server, "a.example.org", "A") for _ in range(3)]
        await wait_for(lambda: not _only_entry(plugin).refreshing)
        clock.advance(3600)  # beyond serve_stale's hour: no stale answer any more
        gone = await query(server, "a.example.org", "A")
        served = _sample(plugin, "coredns_cache_served_stale")
    assert ttls(first) == [10]
    for reply in stale:
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer[0][0].address == "192.0.2.1"
        assert ttls(reply) == [30]  # RFC 8767's stale TTL
    assert gone.rcode() == dns.rcode.SERVFAIL
    assert served == 3


async def test_serve_stale_immediate_refreshes_behind_the_answer() -> None:
    async with cached("cache {\n serve_stale 1h immediate 5\n }", ttl=10) as (
        server,
        up,
        plugin,
        clock,
    ):
        await query(server, "a.example.org", "A")
        up.records[("a.example.org.", "A")] = ["192.0.2.111"]
        clock.advance(12)
        stale = await query(server, "a.example.org", "A")
        await wait_for(lambda: up.count() == 2)
        await wait_for(lambda: _only_entry(plugin).stored == clock.now)
        fresh = await query(server, "a.example.org", "A")
    assert stale.answer[0][0].address == "192.0.2.1"
    assert ttls(stale) == [5]
    assert fresh.answer[0][0].address == "192.0.2.111"
    assert ttls(fresh) == [10]


async def test_serve_stale_verify_asks_first() -> None:
    async with cached("cache {\n serve_stale 1h verify 300ms 7\n }", ttl=10) as (
        server,
        up,
        _,
        clock,
    ):
        await query(server, "a.example.org", "A")
        up.records[("a.example.org.", "A")] = ["192.0.2.111"]
        clock.advance(12)
        fresh = await query(server, "a.example.org", "A")  # upstream answers: its answer
        clock.advance(12)
        up.mode = "silent"
        with trio.fail_after(2):
            stale = await query(server, "a.example.org", "A")  # no answer in 300 ms: stale
        up.mode = "servfail"
        stale_again = await query(server, "a.example.org", "A")
    assert fresh.answer[0][0].address == "192.0.2.111"
    assert ttls(fresh) == [10]
    for reply in (stale, stale_again):
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer[0][0].address == "192.0.2.111"
        assert ttls(reply) == [7]
    assert up.count() == 4


async def test_serve_stale_failure_recheck_skips_the_upstream() -> None:
    cache = "cache {\n serve_stale 1h verify 300ms 7 10s\n }"
    async with cached(cache, ttl=10) as (server, up, _, clock):
        await query(server, "a.example.org", "A")
        clock.advance(12)
        up.mode = "servfail"
        await query(server, "a.example.org", "A")  # fails: no asking for 10 s
        await query(server, "a.example.org", "A")
        clock.advance(11)
        await query(server, "a.example.org", "A")
    assert up.count() == 3


async def test_a_stale_servfail_is_never_served() -> None:
    async with cached("cache {\n serve_stale\n }", mode="servfail") as (server, up, _, clock):
        await query(server, "a.example.org", "A")
        clock.advance(6)  # the SERVFAIL expired after 5 s: asked again, not served stale
        await query(server, "a.example.org", "A")
    assert up.count() == 2


async def test_prefer_positive_keeps_a_stale_answer_over_a_new_denial() -> None:
    cache = "cache {\n serve_stale 1h verify\n serve_stale_policy prefer_positive\n }"
    async with cached(cache, ttl=10) as (server, up, _, clock):
        await query(server, "a.example.org", "A")
        del up.records[("a.example.org.", "A")]
        clock.advance(12)
        reply = await query(server, "a.example.org", "A")
    assert up.count() == 2
    assert reply.answer[0][0].address == "192.0.2.1"


# -- keepttl, disable, zones ------------------------------------------------------------------


async def test_keepttl_serves_the_stored_ttl() -> None:
    async with cached("cache {\n keepttl\n }") as (server, up, _, clock):
        await query(server, "a.example.org", "A")
        clock.advance(100)
        reply = await query(server, "a.example.org", "A")
    assert ttls(reply) == [300]
    assert up.count() == 1


@pytest.mark.parametrize(
    ("option", "positive_asks", "negative_asks"),
    [
        ("disable success", 2, 1),
        ("disable denial", 1, 2),
        ("disable success example.net", 1, 1),
        ("disable denial example.org", 1, 2),
    ],
)
async def test_disable(option: str, positive_asks: int, negative_asks: int) -> None:
    async with cached(f"cache {{\n {option}\n }}") as (server, up, _, _):
        for _ in range(2):
            await query(server, "a.example.org", "A")
            await query(server, "missing.example.org", "A")
    assert up.count("a.example.org") == positive_asks
    assert up.count("missing.example.org") == negative_asks


async def test_only_the_given_zones_are_cached() -> None:
    async with cached("cache 60 example.org") as (server, up, _, _):
        for _ in range(2):
            await query(server, "a.example.org", "A")
            await query(server, "www.example.net", "A")
    assert up.count("a.example.org") == 1
    assert up.count("www.example.net") == 2


# -- The synchronous path (a plugin that answers without waiting) ------------------------------


async def test_answers_given_without_waiting_are_stored() -> None:
    TablePlugin.reset()
    text = ".:0 {\n    bind 127.0.0.1\n    cache\n    table\n}\n"
    async with serve(text, registry=REGISTRY) as server:
        replies = [await query(server, "x.table", "A") for _ in range(3)]
    assert TablePlugin.calls == 1
    assert all(r.answer[0][0].address == "192.0.2.80" for r in replies)


def table_corefile(cache: str = "cache") -> str:
    return f".:0 {{\n    bind 127.0.0.1\n    {cache}\n    table\n}}\n"


async def test_a_plugin_answering_without_waiting_is_asked_with_ad_set() -> None:
    TablePlugin.reset()
    async with serve(table_corefile(), registry=REGISTRY) as server:
        miss = await query(server, "x.table", "A")
        hit = await query(server, "x.table", "A")
        with_ad = make_query("y.table", "A")
        with_ad.flags |= dns.flags.AD
        asked = await query(server, with_ad)
    assert TablePlugin.asked_ad == [True, True]  # as CoreDNS: whether the client set it or not
    assert not miss.flags & dns.flags.AD and not hit.flags & dns.flags.AD
    assert asked.rcode() == dns.rcode.NOERROR


@pytest.mark.parametrize("verify", ["verify", "verify 0 30 10s", "verify 5s", "verify 5s 30 10s"])
async def test_serve_stale_verify_asks_a_plugin_answering_without_waiting(verify: str) -> None:
    TablePlugin.reset()
    cache = f"cache {{\n serve_stale 1h {verify}\n }}"
    async with serve(table_corefile(cache), registry=REGISTRY) as server:
        plugin = cache_of(server)
        clock = Clock()
        plugin.clock = clock
        first = await query(server, "x.table", "A")
        TablePlugin.address = "192.0.2.81"
        clock.advance(61)  # expired: verified first
        verified = await query(server, "x.table", "A")
        hit = await query(server, "x.table", "A")
        await wait_for(lambda: not _only_entry(plugin).refreshing)
        counts = {
            name: _sample(plugin, f"coredns_cache_{name}")
            for name in ("requests", "misses", "hits", "served_stale")
        }
    assert first.answer[0][0].address == "192.0.2.80"
    assert verified.answer[0][0].address == hit.answer[0][0].address == "192.0.2.81"
    assert ttls(verified) == [60]
    assert TablePlugin.calls == 2
    assert TablePlugin.asked_ad == [True, True]
    assert counts == {"requests": 3, "misses": 2, "hits": 1, "served_stale": 0}


@pytest.mark.parametrize(
    "cache",
    ["cache", "cache {\n serve_stale 1h verify\n }", "cache {\n serve_stale 1h verify 2s\n }"],
)
async def test_a_query_behind_errors_is_asked_and_counted_once(cache: str) -> None:
    """errors first, as in Kubernetes' default Corefile: one upstream question and one
    count per miss or verification."""
    registry = Registry.from_classes(
        {"bind": BindPlugin, "cache": CachePlugin, "errors": ErrorsPlugin, "relay": RelayPlugin}
    )
    async with Upstream(records=dict(RECORDS), ttl=10).running() as up:
        text = corefile(up, cache).replace(
            "    bind 127.0.0.1\n", "    bind 127.0.0.1\n    errors\n"
        )
        async with serve(text, registry=registry) as server:
            assert server.config is not None
            names = [p.name for p in server.config.blocks[0].plugins if p.serves_queries]
            assert names == ["errors", "cache", "relay"]
            plugin = cache_of(server)
            clock = Clock()
            plugin.clock = clock
            first = await query(server, "a.example.org", "A")
            up.records[("a.example.org.", "A")] = ["192.0.2.111"]
            clock.advance(12)  # expired: asked again (a miss, or a verification)
            second = await query(server, "a.example.org", "A")
            counts = [_sample(plugin, f"coredns_cache_{name}") for name in ("requests", "misses")]
    assert first.answer[0][0].address == "192.0.2.1"
    assert second.answer[0][0].address == "192.0.2.111"
    assert up.count() == 2
    assert counts == [2, 2]


# -- Metrics ---------------------------------------------------------------------------------


async def test_metrics_count_requests_hits_and_misses() -> None:
    async with cached() as (server, _, plugin, _):
        for _ in range(3):
            await query(server, "a.example.org", "A")
        await query(server, "missing.example.org", "A")
        await query(server, "missing.example.org", "A")
        samples = {
            (name, labels.get("type", "")): value
            for name, labels, value in _samples(plugin)
            if labels["zones"] == "." and labels["view"] == ""
        }
    assert samples[("coredns_cache_requests_total", "")] == 5
    assert samples[("coredns_cache_misses_total", "")] == 2
    assert samples[("coredns_cache_hits_total", "success")] == 2
    assert samples[("coredns_cache_hits_total", "denial")] == 1
    assert samples[("coredns_cache_entries", "success")] == 1
    assert samples[("coredns_cache_entries", "denial")] == 1
    assert samples[("coredns_cache_served_stale_total", "")] == 0


async def test_metrics_count_verified_and_stale_answers() -> None:
    """requests, misses, hits and served_stale through every turn of serve_stale verify."""
    seen: list[tuple[float, ...]] = []
    async with cached("cache {\n serve_stale 1h verify 300ms 7\n }", ttl=10) as (
        server,
        up,
        plugin,
        clock,
    ):

        def counted() -> None:
            """requests, misses, hits (success), hits (denial), served_stale."""
            seen.append((
                _sample(plugin, "coredns_cache_requests"),
                _sample(plugin, "coredns_cache_misses"),
                _sample(plugin, "coredns_cache_hits", type="success"),
                _sample(plugin, "coredns_cache_hits", type="denial"),
                _sample(plugin, "coredns_cache_served_stale"),
            ))  # fmt: skip

        await query(server, "a.example.org", "A")  # miss
        await query(server, "a.example.org", "A")  # hit
        counted()
        clock.advance(12)
        await query(server, "a.example.org", "A")  # expired, verified: a miss
        counted()
        clock.advance(12)
        up.mode = "silent"
        await query(server, "a.example.org", "A")  # no answer within 300 ms: stale
        counted()
        up.mode = "servfail"
        await query(server, "a.example.org", "A")  # SERVFAIL does not verify: stale
        counted()
        await query(server, "missing.example.org", "A")  # miss (NXDOMAIN)
        await query(server, "missing.example.org", "A")  # hit (denial)
        counted()
    assert seen == [
        (2, 1, 1, 0, 0),
        (3, 2, 1, 0, 0),
        (4, 2, 2, 0, 1),
        (5, 2, 3, 0, 2),
        (7, 3, 3, 1, 2),
    ]


async def test_metrics_are_scraped_with_coredns_names() -> None:
    registry = Registry.from_classes(
        {
            "bind": BindPlugin,
            "cache": CachePlugin,
            "relay": RelayPlugin,
            "prometheus": PrometheusPlugin,
        }
    )
    async with Upstream(records=dict(RECORDS)).running() as up:
        text = corefile(up).replace("    cache\n", "    prometheus 127.0.0.1:0\n    cache\n")
        async with serve(text, registry=registry) as server:
            for _ in range(2):
                await query(server, "a.example.org", "A")
            body = await http_get(server.http_address("127.0.0.1", 0), "/metrics")
    found = {
        (s.name, s.labels.get("type", "")): (s.value, s.labels)
        for family in text_string_to_metric_families(body)
        for s in family.samples
        if s.name.startswith("coredns_cache_")
    }
    value, labels = found[("coredns_cache_hits_total", "success")]
    assert value == 1
    assert labels == {"server": "dns://127.0.0.1:0", "type": "success", "zones": ".", "view": ""}
    assert found[("coredns_cache_entries", "success")][0] == 1
    assert found[("coredns_cache_requests_total", "")][0] == 2
    assert found[("coredns_cache_misses_total", "")][0] == 1
    for name in ("prefetch", "drops", "served_stale"):
        assert found[(f"coredns_cache_{name}_total", "")][0] == 0
    assert found[("coredns_cache_evictions_total", "denial")][0] == 0


# -- Helpers ---------------------------------------------------------------------------------


async def http_get(address: tuple[str, int], path: str) -> str:
    """The body of a plain HTTP/1.1 GET (the server closes the connection)."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        await sock.connect(address)
        await sock.send(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        data = b""
        with trio.fail_after(3):
            while chunk := await sock.recv(65536):
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    return body.decode()


def corefile_for(upstream_port: int, cache: str) -> str:
    return f".:0 {{\n    bind 127.0.0.1\n    {cache}\n    relay 127.0.0.1:{upstream_port}\n}}\n"


async def _port_of(upstream: Upstream) -> int:
    """Reserve a port for an upstream that is started later (bound, then released)."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        upstream.port = sock.getsockname()[1]
    return upstream.port


def _only_entry(plugin: CachePlugin) -> Entry:
    entries = list(plugin.success.entries.values()) + list(plugin.denial.entries.values())
    assert len(entries) == 1
    return entries[0]


def _samples(plugin: CachePlugin) -> list[tuple[str, dict[str, str], float]]:
    return [(s.name, s.labels, s.value) for family in plugin.metrics() for s in family.samples]


def _sample(plugin: CachePlugin, family: str, **labels: str) -> float:
    """The sum of a family's samples (``_total`` added for counters) matching ``labels``."""
    return sum(
        value
        for name, sample_labels, value in _samples(plugin)
        if name in (family, family + "_total")
        and all(sample_labels.get(k) == v for k, v in labels.items())
    )
