"""cache: CoreDNS's behaviour where we had missed it, and where we deliberately do better.

Each test runs the real server and a real upstream on loopback (test_cache.py's
``cached``: bind, cache, a relay plugin, a fake clock) and is named after the
CoreDNS behaviour it pins; the ones without ``as_coredns`` pin a documented
difference (plugins/cache/README.md, "Differences from CoreDNS").
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio

from pycorefile import (
    CorefileError,
    Directive,
    Plugin,
    PluginError,
    Request,
    Result,
    SetupContext,
)
from pycorefile._registry import Registry
from pycorefile.testing import make_query, query, query_wire, serve
from pycorefile_plugins.bind import BindPlugin
from pycorefile_plugins.cache import CachePlugin, Entry

from .test_cache import RelayPlugin, cache_of, cached, ttls, wait_for

Handler = Callable[[dns.message.Message], dns.message.Message]
SOA = "ns.test. hostmaster.test. 1 3600 600 86400 {minimum}"


def entry_of(plugin: CachePlugin) -> Entry:
    """The cache's only entry."""
    entries = [*plugin.success.entries.values(), *plugin.denial.entries.values()]
    assert len(entries) == 1
    return entries[0]


def stored(plugin: CachePlugin) -> int:
    return len(plugin.success) + len(plugin.denial)


def address(reply: dns.message.Message) -> str:
    return str(reply.answer[0][0].address)


# -- Negative TTLs (issue 16.12) ----------------------------------------------------------


def denial(rcode: int, soa_ttl: int, minimum: int, nsec_ttl: int | None = None) -> Handler:
    """NXDOMAIN or NODATA (rcode NOERROR) with an SOA, and an NSEC record if asked."""

    def handler(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.set_rcode(dns.rcode.Rcode.make(rcode))
        soa = SOA.format(minimum=minimum)
        r.authority.append(dns.rrset.from_text("example.org.", soa_ttl, "IN", "SOA", soa))
        if nsec_ttl is not None:
            nsec = "z.example.org. A NS SOA"
            r.authority.append(dns.rrset.from_text("example.org.", nsec_ttl, "IN", "NSEC", nsec))
        return r

    return handler


async def lifetime(cache: str, handler: Handler, seconds: int) -> tuple[dns.message.Message, int]:
    """The first reply, and how often the upstream was asked by queries at 0 s,
    ``seconds - 0.5`` s (still cached) and ``seconds + 0.5`` s (expired)."""
    async with cached(cache, handler=handler) as (server, up, _, clock):
        first = await query(server, "gone.example.org", "A")
        clock.advance(seconds - 0.5)
        await query(server, "gone.example.org", "A")
        assert up.count() == 1, "expired too early"
        clock.advance(1)
        await query(server, "gone.example.org", "A")
        return first, up.count()


@pytest.mark.parametrize(
    "rcode", [dns.rcode.NXDOMAIN, dns.rcode.NOERROR], ids=["nxdomain", "nodata"]
)
@pytest.mark.parametrize(
    ("cache", "soa_ttl", "minimum", "expected"),
    [
        ("cache", 3600, 60, 60),  # MINIMUM is smaller: RFC 2308 (CoreDNS keeps 1800 s)
        ("cache", 30, 900, 30),  # the SOA's TTL is smaller
        ("cache", 300, 300, 300),
        ("cache {\n denial 100 20\n }", 3600, 60, 20),  # then capped at the denial TTL
        ("cache {\n denial 100 1800 90\n }", 3600, 60, 90),  # and raised to its MINTTL
        ("cache", 300, 0, 5),  # MINIMUM 0 meets the default MINTTL
    ],
)
async def test_negative_ttl_is_min_of_soa_ttl_and_minimum(
    rcode: int, cache: str, soa_ttl: int, minimum: int, expected: int
) -> None:
    first, asked = await lifetime(cache, denial(rcode, soa_ttl, minimum), expected)
    assert first.rcode() == rcode
    assert ttls(first) == [expected]  # the client is told the same negative TTL
    assert asked == 2


@pytest.mark.parametrize(
    ("cache", "soa_ttl", "nsec_ttl", "expected"),
    [
        ("cache", 600, 20, 20),  # the shortest record of the reply ends the entry
        ("cache", 7200, None, 1800),  # the default denial TTL cap
        ("cache 30", 600, None, 30),  # the directive's TTL caps denials too
        ("cache {\n denial 100 1800 0\n }", 3, None, 3),  # MINTTL 0 keeps a short TTL
        ("cache", 2, None, 5),  # the default MINTTL raises it
    ],
)
async def test_negative_ttl_is_the_shortest_record_clamped_to_denial_bounds_as_coredns(
    cache: str, soa_ttl: int, nsec_ttl: int | None, expected: int
) -> None:
    handler = denial(dns.rcode.NXDOMAIN, soa_ttl, soa_ttl, nsec_ttl)
    first, asked = await lifetime(cache, handler, expected)
    assert min(ttls(first)) == expected
    assert asked == 2


async def test_soa_minimum_zero_with_denial_minttl_zero_is_not_cached() -> None:
    handler = denial(dns.rcode.NXDOMAIN, 300, 0)
    async with cached("cache {\n denial 100 1800 0\n }", handler=handler) as (
        server,
        up,
        plugin,
        _,
    ):
        for _ in range(2):
            assert (await query(server, "gone.example.org", "A")).rcode() == dns.rcode.NXDOMAIN
        assert stored(plugin) == 0
    assert up.count() == 2


# -- The AD bit (issue 17.4) ---------------------------------------------------------------


def validating(asked_ad: list[bool], always_ad: bool = False) -> Handler:
    """A validating resolver: AD only for queries with AD or DO (RFC 6840 section 5.7),
    or on every reply (``always_ad``, as some do). Records the AD bit of each query."""

    def handler(q: dns.message.Message) -> dns.message.Message:
        asked_ad.append(bool(q.flags & dns.flags.AD))
        r = dns.message.make_response(q, our_payload=1232)
        if always_ad or q.flags & dns.flags.AD or q.ednsflags & dns.flags.DO:
            r.flags |= dns.flags.AD
        r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.5"))
        return r

    return handler


def asking(name: str, ad: bool, do: bool) -> dns.message.Message:
    q = make_query(name, "A", do=do)
    if ad:
        q.flags |= dns.flags.AD
    return q


CLIENTS = [(False, False), (True, False), (False, True), (True, True)]
"""A client's (AD, DO) bits."""


@pytest.mark.parametrize(
    "cache",
    ["cache {\n serve_stale\n }", "cache {\n serve_stale\n prefetch 100\n }"],
    ids=["fast-path", "chain"],  # prefetch makes hits take the chain (handle)
)
async def test_ad_bit_goes_to_clients_that_set_ad_or_do_as_coredns(cache: str) -> None:
    asked_ad: list[bool] = []
    replies: dict[tuple[bool, bool], list[dns.message.Message]] = {}
    async with cached(cache, handler=validating(asked_ad)) as (server, up, plugin, clock):
        assert server.config is not None and server.config.blocks[0].known_by == "cache"
        for i, (ad, do) in enumerate(CLIENTS):
            miss = await query(server, asking(f"n{i}.example.org", ad, do))
            hit = await query(server, asking(f"n{i}.example.org", ad, do))
            replies[(ad, do)] = [miss, hit]
        assert up.count() == len(CLIENTS)
        clock.advance(400)  # every entry expired: stale answers
        for i, (ad, do) in enumerate(CLIENTS):
            stale = await query(server, asking(f"n{i}.example.org", ad, do))
            assert ttls(stale) == [30]
            replies[(ad, do)].append(stale)
        await wait_for(lambda: not any(e.refreshing for e in plugin.success.entries.values()))
    for (ad, do), seen in replies.items():
        assert [bool(r.flags & dns.flags.AD) for r in seen] == [ad or do] * 3, (ad, do)
    assert asked_ad and all(asked_ad)  # misses and refreshes ask with AD, as CoreDNS


@pytest.mark.parametrize(("first_ad", "second_ad"), [(False, True), (True, False)])
async def test_ad_bit_does_not_depend_on_the_client_that_filled_the_entry_as_coredns(
    first_ad: bool, second_ad: bool
) -> None:
    asked_ad: list[bool] = []
    async with cached(handler=validating(asked_ad)) as (server, up, _, _):
        first = await query(server, asking("a.example.org", first_ad, False))
        second = await query(server, asking("a.example.org", second_ad, False))
    assert up.count() == 1  # one entry for both: AD is not part of the key
    assert bool(first.flags & dns.flags.AD) == first_ad
    assert bool(second.flags & dns.flags.AD) == second_ad
    assert asked_ad == [True]


async def test_ad_bit_is_cleared_for_plain_clients_on_replies_not_stored_as_coredns() -> None:
    def dangling(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AD  # an upstream that sets AD whatever the query said
        r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "CNAME", "x.test."))
        return r

    async with cached(handler=dangling) as (server, up, plugin, _):
        plain = await query(server, asking("a.example.org", False, False))
        with_ad = await query(server, asking("a.example.org", True, False))
        assert stored(plugin) == 0
    assert up.count() == 2
    assert not plain.flags & dns.flags.AD
    assert with_ad.flags & dns.flags.AD


# -- serve_stale: verifying and refreshing (issue 17.5) -------------------------------------


SLOW = 2.0
"""Seconds a slow upstream takes: ten times the verify timeout below."""


async def test_verify_answer_after_the_timeout_is_stored_as_coredns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RelayPlugin, "timeout", 3 * SLOW)
    cache = "cache {\n serve_stale 1h verify 200ms 7\n }"
    async with cached(cache, ttl=10) as (server, up, plugin, clock):
        await query(server, "a.example.org", "A")
        up.records[("a.example.org.", "A")] = ["192.0.2.111"]
        up.delay = SLOW
        clock.advance(12)
        stale = await query(server, "a.example.org", "A")
        await wait_for(lambda: entry_of(plugin).stored == clock.now, 10)
        fresh = await query(server, "a.example.org", "A")
    assert (address(stale), ttls(stale)) == ("192.0.2.1", [7])
    assert (address(fresh), ttls(fresh)) == ("192.0.2.111", [10])
    assert up.count() == 2  # the late answer was kept: the last query was a hit


async def test_verify_with_failure_recheck_verifies_once_at_a_time_as_coredns(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(RelayPlugin, "timeout", 3 * SLOW)
    cache = "cache {\n serve_stale 1h verify 200ms 7 10s\n }"
    async with cached(cache, ttl=10) as (server, up, plugin, clock):
        await query(server, "a.example.org", "A")
        up.records[("a.example.org.", "A")] = ["192.0.2.111"]
        up.delay = SLOW
        clock.advance(12)
        first = await query(server, "a.example.org", "A")  # waits 200 ms, then stale
        second = await query(server, "a.example.org", "A")  # one in flight: stale, no asking
        await wait_for(lambda: entry_of(plugin).stored == clock.now, 10)
        fresh = await query(server, "a.example.org", "A")
    assert address(first) == address(second) == "192.0.2.1"
    assert address(fresh) == "192.0.2.111"
    assert up.count() == 2


@pytest.mark.parametrize("verify", ["verify 0 7 10s", "verify 2s 7 10s"])
async def test_a_verifying_query_refused_before_it_waits_holds_no_verification_back(
    verify: str,
) -> None:
    """Over ``max_in_flight`` a query that would wait is REFUSED and its wait dropped:
    the entry must not stay 'being verified' (with FAILURE_RECHECK, one at a time)."""
    cache = f"cache {{\n serve_stale 1h {verify}\n }}"
    async with cached(cache, ttl=10) as (server, up, plugin, clock):
        await query(server, "a.example.org", "A")
        up.records[("a.example.org.", "A")] = ["192.0.2.111"]
        clock.advance(12)
        limit = server.options.max_in_flight
        server.options.max_in_flight = 0
        try:
            refused = await query(server, "a.example.org", "A")
        finally:
            server.options.max_in_flight = limit
        await wait_for(lambda: not entry_of(plugin).refreshing)
        fresh = await query(server, "a.example.org", "A")
    assert refused.rcode() == dns.rcode.REFUSED
    assert (address(fresh), ttls(fresh)) == ("192.0.2.111", [10])
    assert up.count() == 2


def stamp(t: float) -> str:
    return time.strftime("%Y%m%d%H%M%S", time.gmtime(t))


def refresh_reply(kind: str) -> Handler:
    """The upstream's reply to a refresh: new data (``fresh``) or an unusable one."""

    def handler(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q, our_payload=1232)
        if kind in ("servfail", "refused"):
            r.set_rcode(dns.rcode.SERVFAIL if kind == "servfail" else dns.rcode.REFUSED)
            return r
        name = q.question[0].name
        r.answer.append(dns.rrset.from_text(name, 10, "IN", "A", "192.0.2.111"))
        if kind == "truncated":
            r.flags |= dns.flags.TC
        elif kind == "expired_rrsig":
            now = time.time()
            sig = f"A 8 3 10 {stamp(now - 60)} {stamp(now - 3600)} 12345 example.org. dGVzdA=="
            r.answer.append(dns.rrset.from_text(name, 10, "IN", "RRSIG", sig))
        return r

    return handler


@pytest.mark.parametrize("mode", ["verify 200ms 7", "verify 0 7", "immediate 7"])
@pytest.mark.parametrize(
    ("kind", "do"),
    [
        ("truncated", False),
        ("expired_rrsig", True),  # a DNSSEC client must not get an expired signature
        ("servfail", False),
        ("refused", False),
        ("fresh", False),  # the control: a usable refresh replaces the stale entry
    ],
)
async def test_unusable_refresh_keeps_the_stale_entry_as_coredns(
    mode: str, kind: str, do: bool
) -> None:
    cache = f"cache {{\n serve_stale 1h {mode}\n }}"
    async with cached(cache, ttl=10) as (server, up, plugin, clock):
        await query(server, "a.example.org", "A", do=do)
        old = entry_of(plugin)
        up.handler = refresh_reply(kind)
        clock.advance(12)
        first = await query(server, "a.example.org", "A", do=do)
        await wait_for(lambda: up.count() == 2)
        await wait_for(lambda: not entry_of(plugin).refreshing)
        second = await query(server, "a.example.org", "A", do=do)
        kept = entry_of(plugin) is old
    if kind != "fresh":
        assert kept
        for reply in (first, second):
            assert reply.rcode() == dns.rcode.NOERROR and not reply.flags & dns.flags.TC
            assert (address(reply), ttls(reply)) == ("192.0.2.1", [7])
    else:
        assert not kept
        assert address(second) == "192.0.2.111"
        assert address(first) == ("192.0.2.1" if mode.startswith("immediate") else "192.0.2.111")


# -- Conflicting CNAMEs (issue 17.9) -------------------------------------------------------


def two_cnames(targets: Sequence[str], soa: bool = False) -> Handler:
    """CNAMEs from the question name to each of ``targets``, in order; good.x. has an A."""

    def handler(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        name = q.question[0].name
        for target in targets:  # one RRset each, so both go on the wire
            r.answer.append(dns.rrset.from_text(name, 300, "IN", "CNAME", target))
        r.answer.append(dns.rrset.from_text("good.x.", 300, "IN", "A", "192.0.2.9"))
        if soa:
            r.authority.append(
                dns.rrset.from_text("example.org.", 300, "IN", "SOA", SOA.format(minimum=300))
            )
        return r

    return handler


@pytest.mark.parametrize(
    ("qtype", "targets"),
    [
        ("A", ["bad.x.", "good.x."]),  # the good target last: dnspython alone keeps only it
        ("A", ["good.x.", "bad.x."]),
        ("CNAME", ["good.x.", "bad.x."]),
    ],
)
async def test_two_cname_targets_for_one_name_are_not_cached_as_coredns(
    qtype: str, targets: list[str]
) -> None:
    async with cached(handler=two_cnames(targets)) as (server, up, plugin, _):
        for _ in range(2):
            wire = await query_wire(server, make_query("www.example.org", qtype).to_wire())
            assert wire is not None
            reply = dns.message.from_wire(wire, one_rr_per_rrset=True)
            cnames = [
                r[0].target.to_text() for r in reply.answer if r.rdtype == dns.rdatatype.CNAME
            ]
            assert cnames == targets  # passed on as the upstream sent it
        assert stored(plugin) == 0
    assert up.count() == 2


async def test_two_cname_targets_with_an_soa_are_not_cached_as_nodata() -> None:
    # CoreDNS stores this one as NODATA (it has an SOA); we never store a broken chain.
    async with cached(handler=two_cnames(["bad.x.", "good.x."], soa=True)) as (
        server,
        up,
        plugin,
        _,
    ):
        for _ in range(2):
            await query(server, "www.example.org", "A")
        assert stored(plugin) == 0
    assert up.count() == 2


async def test_duplicate_cnames_with_one_target_are_cached_as_coredns() -> None:
    async with cached(handler=two_cnames(["good.x.", "GOOD.x."])) as (server, up, plugin, _):
        replies = [await query(server, "www.example.org", "A") for _ in range(2)]
        assert len(plugin.success) == 1
    assert up.count() == 1
    assert all(r.answer[-1][0].address == "192.0.2.9" for r in replies)


# -- Setup checks (issue 17.10) --------------------------------------------------------------

REGISTRY = Registry.from_classes({"bind": BindPlugin, "cache": CachePlugin})


@pytest.mark.parametrize(
    ("options", "where", "message"),
    [
        (
            "serve_stale\n        serve_stale_policy prefer_positive\n"
            "        serve_stale_policy prefer_positive",
            "5:9",
            "serve_stale_policy can only be specified once",
        ),
        (
            "serve_stale 1h immediate 4294967296s",
            "3:34",
            "serve_stale response TTL exceeds the DNS TTL range",
        ),
        (
            "serve_stale 1h verify 1s 4294967296",
            "3:34",
            "serve_stale response TTL exceeds the DNS TTL range",
        ),
    ],
)
async def test_setup_rejects_what_coredns_rejects(options: str, where: str, message: str) -> None:
    text = f".:0 {{\n    cache {{\n        {options}\n    }}\n}}\n"
    with pytest.raises(CorefileError) as info:
        async with serve(text, registry=REGISTRY):
            pass
    assert str(info.value).startswith(f"Corefile:{where} - plugin/cache: {message}")


async def test_largest_stale_response_ttl_is_accepted_as_coredns() -> None:
    option = "serve_stale 1h immediate 4294967295s"
    text = f".:0 {{\n    bind 127.0.0.1\n    cache {{\n        {option}\n    }}\n}}\n"
    async with serve(text, registry=REGISTRY) as server:
        stale = cache_of(server).config.serve_stale
    assert stale is not None and stale.response_ttl == 2**32 - 1


# -- A failing next plugin (PluginError) ------------------------------------------------------


class FailNowPlugin(Plugin):
    """``failnow``: raises PluginError(REFUSED) without waiting, counting its calls."""

    after = "cache"
    calls = 0

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> FailNowPlugin:
        return cls()

    def handle(self, request: Request) -> Result:
        FailNowPlugin.calls += 1
        raise PluginError("failnow: refused", dns.rcode.REFUSED)


async def test_plugin_error_on_a_miss_is_not_stored() -> None:
    async with cached(relay="pluginerror", mode="servfail") as (server, up, plugin, _):
        replies = [await query(server, "a.example.org", "A") for _ in range(2)]
        assert stored(plugin) == 0  # a SERVFAIL reply would have been kept 5 s
    assert [r.rcode() for r in replies] == [dns.rcode.SERVFAIL] * 2
    assert up.count() == 2


async def test_plugin_error_without_waiting_is_not_stored() -> None:
    FailNowPlugin.calls = 0
    registry = Registry.from_classes(
        {"bind": BindPlugin, "cache": CachePlugin, "failnow": FailNowPlugin}
    )
    text = ".:0 {\n    bind 127.0.0.1\n    cache\n    failnow\n}\n"
    async with serve(text, registry=registry) as server:
        replies = [await query(server, "a.example.org", "A") for _ in range(2)]
        assert stored(cache_of(server)) == 0
    assert [r.rcode() for r in replies] == [dns.rcode.REFUSED] * 2
    assert FailNowPlugin.calls == 2


@pytest.mark.parametrize(
    ("cache", "advance"),
    [
        ("cache {\n prefetch 1 1m 90%\n }", 31),  # a hit with < 90% of the TTL left
        ("cache {\n serve_stale 1h immediate 7\n }", 12),
        ("cache {\n serve_stale 1h verify 200ms 7\n }", 12),
        ("cache {\n serve_stale 1h verify 0 7\n }", 12),
    ],
    ids=["prefetch", "immediate", "verify-timeout", "verify"],
)
async def test_plugin_error_in_a_refresh_keeps_the_entry(cache: str, advance: float) -> None:
    async with cached(cache, ttl=10 if advance == 12 else 300, relay="pluginerror") as (
        server,
        up,
        plugin,
        clock,
    ):
        await query(server, "a.example.org", "A")
        old = entry_of(plugin)
        up.mode = "servfail"  # the relay raises PluginError
        clock.advance(advance)
        failed = await query(server, "a.example.org", "A")
        await wait_for(lambda: up.count() == 2)
        await wait_for(lambda: not old.refreshing)
        again = await query(server, "a.example.org", "A")
        assert entry_of(plugin) is old
        # The refreshing machinery still works once the upstream is back.
        up.mode = "answer"
        up.records[("a.example.org.", "A")] = ["192.0.2.111"]
        with trio.fail_after(5):
            while address(await query(server, "a.example.org", "A")) != "192.0.2.111":
                await trio.sleep(0.05)
    assert address(failed) == address(again) == "192.0.2.1"
    assert failed.rcode() == again.rcode() == dns.rcode.NOERROR
