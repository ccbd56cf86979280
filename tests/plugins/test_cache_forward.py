"""cache in front of the real forward plugin and a counting upstream on loopback."""

from __future__ import annotations

from collections.abc import Callable

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
import trio
from dns.message import Message

from pycorefile import Server
from pycorefile.testing import Upstream, make_query, query, serve
from pycorefile_plugins.cache import CachePlugin

RECORDS = {("a.example.org.", "A"): ["192.0.2.1"], ("b.example.org.", "AAAA"): ["2001:db8::b"]}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def corefile(up: Upstream, cache: str = "cache") -> str:
    return f".:0 {{\n    bind 127.0.0.1\n    {cache}\n    forward . {up.address}\n}}\n"


def cache_of(server: Server) -> CachePlugin:
    assert server.config is not None
    (plugin,) = server.config.find("cache")
    assert isinstance(plugin, CachePlugin)
    return plugin


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_hits_do_not_reach_the_upstream(proto: str) -> None:
    async with Upstream(records=dict(RECORDS)).running() as up, serve(corefile(up)) as server:
        replies = [await query(server, "A.Example.org", "A", proto=proto) for _ in range(3)]
        missing = [await query(server, "nope.example.org", "A", proto=proto) for _ in range(2)]
    assert up.count("a.example.org", "A") == 1
    assert up.count("nope.example.org") == 1
    assert all(r.answer[0][0].address == "192.0.2.1" for r in replies)
    assert all(r.question[0].name.to_text() == "A.Example.org." for r in replies)
    assert all(r.rcode() == dns.rcode.NXDOMAIN for r in missing)


async def test_do_and_cd_variants_are_separate_entries() -> None:
    async with Upstream(records=dict(RECORDS)).running() as up, serve(corefile(up)) as server:
        for _ in range(2):
            for do in (False, True):
                for cd in (False, True):
                    reply = await query(server, "b.example.org", "AAAA", do=do, cd=cd)
                    assert bool(reply.ednsflags & dns.flags.DO) == do
                    assert bool(reply.flags & dns.flags.CD) == cd
    assert up.count("b.example.org", "AAAA") == 4


async def test_ttl_counts_down_and_entry_expires() -> None:
    async with (
        Upstream(records=dict(RECORDS), ttl=20).running() as up,
        serve(corefile(up)) as server,
    ):
        clock = Clock()
        cache_of(server).clock = clock
        await query(server, "a.example.org", "A")
        clock.now += 12
        later = await query(server, "a.example.org", "A")
        clock.now += 9
        await query(server, "a.example.org", "A")
    assert later.answer[0].ttl == 8
    assert up.count("a.example.org", "A") == 2


async def test_stale_answers_when_the_upstream_is_gone() -> None:
    upstream = Upstream(records=dict(RECORDS), ttl=10)
    async with upstream.running() as up:
        text = corefile(up, "cache {\n        serve_stale 1h verify 500ms\n    }")
        async with serve(text) as server:
            clock = Clock()
            cache_of(server).clock = clock
            await query(server, "a.example.org", "A")
            up.mode = "silent"  # the upstream no longer answers
            clock.now += 30
            with trio.fail_after(3):
                stale = await query(server, "a.example.org", "A", timeout=2.5)
    assert stale.rcode() == dns.rcode.NOERROR
    assert stale.answer[0][0].address == "192.0.2.1"
    assert stale.answer[0].ttl == 30


async def test_immediate_stale_answers_after_the_upstream_stopped() -> None:
    upstream = Upstream(records=dict(RECORDS), ttl=10)
    async with upstream.running() as up:
        text = corefile(up, "cache {\n        serve_stale 1h immediate 5\n    }")
    # The upstream has stopped; its port is closed.
    async with serve(text) as server:
        clock = Clock()
        cache_of(server).clock = clock
        async with Upstream(records=dict(RECORDS), ttl=10, port=up.port).running():
            await query(server, "a.example.org", "A")
        clock.now += 60
        with trio.fail_after(2):
            stale = [await query(server, "a.example.org", "A") for _ in range(3)]
    for reply in stale:
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.answer[0][0].address == "192.0.2.1"
        assert reply.answer[0].ttl == 5


def validating(asked_ad: list[bool], always_ad: bool) -> Callable[[Message], Message]:
    """A validating resolver: AD for queries with AD or DO (RFC 6840 section 5.7), or
    on every reply (``always_ad``). Records the AD bit of each query it gets."""

    def handler(q: Message) -> Message:
        if q.question[0].name.to_text().endswith(".example.org."):  # not forward's probes
            asked_ad.append(bool(q.flags & dns.flags.AD))
        r = dns.message.make_response(q, our_payload=1232)
        if always_ad or q.flags & dns.flags.AD or q.ednsflags & dns.flags.DO:
            r.flags |= dns.flags.AD
        r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.5"))
        return r

    return handler


@pytest.mark.parametrize("always_ad", [False, True], ids=["rfc6840-upstream", "always-ad"])
@pytest.mark.parametrize("with_cache", [True, False], ids=["cache-forward", "forward"])
async def test_ad_bit_through_forward_as_coredns(with_cache: bool, always_ad: bool) -> None:
    # CoreDNS: forward passes the client's AD to the upstream and the upstream's AD
    # back as it is; cache asks with AD and shows AD only to clients with AD or DO.
    asked_ad: list[bool] = []
    clients = [(False, False), (True, False), (False, True), (True, True)]
    seen: dict[tuple[bool, bool], list[bool]] = {}
    upstream = Upstream(handler=validating(asked_ad, always_ad))
    async with upstream.running() as up:
        text = corefile(up) if with_cache else corefile(up).replace("    cache\n", "")
        async with serve(text) as server:
            for i, (ad, do) in enumerate(clients):
                q = make_query(f"n{i}.example.org", "A", do=do)
                if ad:
                    q.flags |= dns.flags.AD
                replies = [await query(server, q) for _ in range(2)]  # a miss, then a hit
                seen[(ad, do)] = [bool(r.flags & dns.flags.AD) for r in replies]
    for (ad, do), bits in seen.items():
        expected = ad or do or (always_ad and not with_cache)
        assert bits == [expected, expected], (ad, do)
    if with_cache:
        assert asked_ad == [True] * len(clients)
    else:
        assert asked_ad == [ad for ad, _ in clients for _ in range(2)]
