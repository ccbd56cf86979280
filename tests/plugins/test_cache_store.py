"""cache: what is stored and for how long, the bounded stores, and memory, without sockets."""

from __future__ import annotations

import struct
import time

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from pycorefile import Pending, Plugin, Reply, Request, Result
from pycorefile._wire import ttl_offsets
from pycorefile_plugins.cache import (
    CacheConfig,
    CachePlugin,
    Category,
    Entry,
    KindSettings,
    Shelf,
    classify,
    stored_form,
)

NOW = 1_700_000_000.0
SOA = "ns.x. host.x. 1 3600 600 86400 60"


def reply(
    qname: str = "www.example.org.",
    qtype: str = "A",
    rcode: int = dns.rcode.NOERROR,
    answer: tuple[tuple[str, int, str, str], ...] = (),
    authority: tuple[tuple[str, int, str, str], ...] = (),
    do: bool = False,
) -> dns.message.Message:
    q = dns.message.make_query(qname, qtype, want_dnssec=do)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode.make(rcode))
    for name, ttl, rtype, text in answer:
        r.answer.append(dns.rrset.from_text(name, ttl, "IN", rtype, text))
    for name, ttl, rtype, text in authority:
        r.authority.append(dns.rrset.from_text(name, ttl, "IN", rtype, text))
    return r


def sort(r: dns.message.Message, qtype: str = "A", do: bool = False) -> Category:
    return classify(r, r.question[0].name, dns.rdatatype.from_text(qtype), do, NOW)


WWW_A = ("www.example.org.", 300, "A", "192.0.2.1")
WWW_CNAME = ("www.example.org.", 300, "CNAME", "web.example.net.")
WEB_A = ("web.example.net.", 60, "A", "192.0.2.2")
WEB_AAAA = ("web.example.net.", 60, "AAAA", "2001:db8::2")
ZONE_SOA = ("example.org.", 300, "SOA", SOA)
SIG = "A 8 3 300 {end} {start} 12345 example.org. dGVzdA=="


@pytest.mark.parametrize(
    ("message", "qtype", "expected"),
    [
        (reply(answer=(WWW_A,)), "A", Category.SUCCESS),
        (reply(answer=(WEB_A, WWW_CNAME)), "A", Category.SUCCESS),  # order does not matter
        (reply(answer=(WWW_CNAME,)), "A", Category.OTHER),  # dangling chain
        (reply(answer=(WWW_CNAME, WEB_AAAA)), "A", Category.OTHER),  # other address family
        (reply(answer=(WWW_CNAME,), authority=(ZONE_SOA,)), "A", Category.NODATA),
        (reply(qtype="CNAME", answer=(WWW_CNAME,)), "CNAME", Category.SUCCESS),
        (reply(qtype="ANY", answer=(WWW_CNAME,)), "ANY", Category.SUCCESS),
        (
            reply(answer=(WWW_CNAME, ("www.example.org.", 300, "CNAME", "b.x."), WEB_A)),
            "A",
            Category.OTHER,  # two targets for one name
        ),
        (
            reply(answer=(WWW_A, ("evil.example.com.", 300, "A", "203.0.113.1"))),
            "A",
            Category.OTHER,
        ),
        (
            reply(answer=(WWW_CNAME, ("web.example.net.", 300, "CNAME", "www.example.org."))),
            "A",
            Category.OTHER,  # a loop
        ),
        (reply(authority=(ZONE_SOA,)), "A", Category.NODATA),
        (reply(authority=(("example.org.", 300, "NS", "ns.example.org."),)), "A", Category.SUCCESS),
        (reply(), "A", Category.SUCCESS),  # empty NOERROR without SOA, as CoreDNS
        (reply(rcode=dns.rcode.NXDOMAIN, authority=(ZONE_SOA,)), "A", Category.NXDOMAIN),
        (
            reply(rcode=dns.rcode.NXDOMAIN, answer=(WWW_CNAME,), authority=(ZONE_SOA,)),
            "A",
            Category.NXDOMAIN,  # the chain's target does not exist (RFC 6604)
        ),
        (reply(rcode=dns.rcode.NXDOMAIN), "A", Category.OTHER),  # no SOA: no negative TTL
        (
            reply(rcode=dns.rcode.NXDOMAIN, answer=(WWW_A,), authority=(ZONE_SOA,)),
            "A",
            Category.OTHER,
        ),
        (reply(rcode=dns.rcode.SERVFAIL), "A", Category.SERVFAIL),
        (reply(rcode=dns.rcode.NOTIMP), "A", Category.SERVFAIL),
        (reply(rcode=dns.rcode.REFUSED), "A", Category.OTHER),
        (reply(rcode=dns.rcode.FORMERR), "A", Category.OTHER),
        (reply(qtype="AXFR", answer=(ZONE_SOA,)), "AXFR", Category.UNUSABLE),
    ],
)
def test_classify(message: dns.message.Message, qtype: str, expected: Category) -> None:
    assert sort(message, qtype) is expected


def test_truncated_and_notify_are_never_stored() -> None:
    truncated = reply(answer=(WWW_A,))
    truncated.flags |= dns.flags.TC
    notify = reply(answer=(WWW_A,))
    notify.set_opcode(dns.opcode.NOTIFY)
    assert sort(truncated) is Category.UNUSABLE
    assert sort(notify) is Category.UNUSABLE


@pytest.mark.parametrize(
    ("start", "end", "do", "expected"),
    [
        (NOW - 100, NOW + 100, True, Category.SUCCESS),
        (NOW - 100, NOW - 10, True, Category.UNUSABLE),  # expired signature, DO client
        (NOW + 10, NOW + 100, True, Category.UNUSABLE),  # not yet valid
        (NOW - 100, NOW - 10, False, Category.SUCCESS),  # the client does not validate
    ],
)
def test_expired_signatures(start: float, end: float, do: bool, expected: Category) -> None:
    def stamp(t: float) -> str:
        return time.strftime("%Y%m%d%H%M%S", time.gmtime(t))

    sig = SIG.format(start=stamp(start), end=stamp(end))
    message = reply(answer=(WWW_A, ("www.example.org.", 300, "RRSIG", sig)), do=do)
    assert sort(message, do=do) is expected


SUCCESS = KindSettings(100, 3600, 5)


def ttls_of(wire: bytes) -> list[int]:
    return ttl_offsets(wire)[1]


def test_stored_form_clamps_each_record_and_drops_opt() -> None:
    message = reply(
        answer=(WWW_CNAME, ("web.example.net.", 2, "A", "192.0.2.2")),
        authority=(("example.org.", 86400, "NS", "ns.example.org."),),
    )
    message.use_edns(0, payload=4096)
    stored, lifetime, offsets = stored_form(message.to_wire(), Category.SUCCESS, SUCCESS, 5.0)
    assert ttls_of(stored) == [300, 5, 3600]
    assert [struct.unpack_from(">I", stored, off)[0] for off in offsets] == [300, 5, 3600]
    assert lifetime == 5.0
    assert struct.unpack(">H", stored[10:12])[0] == 0  # no OPT record left
    assert dns.message.from_wire(stored).edns == -1


def test_min_above_max_lets_the_max_win() -> None:
    stored, lifetime, _ = stored_form(
        reply(answer=(WWW_A,)).to_wire(), Category.SUCCESS, KindSettings(1, 20, 60), 5.0
    )
    assert (ttls_of(stored), lifetime) == ([20], 20.0)


def test_stored_form_without_records_lives_five_seconds() -> None:
    _, lifetime, _ = stored_form(reply().to_wire(), Category.SUCCESS, SUCCESS, 5.0)
    assert lifetime == 5.0
    _, zero, _ = stored_form(reply().to_wire(), Category.SUCCESS, KindSettings(1, 3600, 0), 5)
    assert zero == 5.0  # MINTTL 0 does not lower CoreDNS's default for empty replies


def test_servfail_lives_the_servfail_duration() -> None:
    wire = reply(rcode=dns.rcode.SERVFAIL).to_wire()
    assert stored_form(wire, Category.SERVFAIL, SUCCESS, 2.5)[1] == 2.5


def test_ad_bit_is_stored_as_received() -> None:
    message = reply(answer=(WWW_A,))
    message.flags |= dns.flags.AD
    stored = stored_form(message.to_wire(), Category.SUCCESS, SUCCESS, 5.0)[0]
    assert dns.message.from_wire(stored).flags & dns.flags.AD  # render decides per client


def entry(stored: float = 0.0) -> Entry:
    wire, lifetime, offsets = stored_form(
        reply(answer=(WWW_A,)).to_wire(), Category.SUCCESS, SUCCESS, 5.0
    )
    return Entry(wire, Category.SUCCESS, stored, lifetime, offsets)


def test_entry_ages_and_goes_stale() -> None:
    e = entry()
    assert e.aged(10).ttls == [290]
    assert e.aged(10) is e.aged(10)  # remembered
    assert e.aged(400).ttls == [0]
    assert e.stale(30).ttls == [30]
    assert e.remaining(299.5) == 1


def test_shelf_evicts_the_oldest_unless_it_was_hit() -> None:
    shelf = Shelf(3)
    entries = {key: entry() for key in (b"a", b"b", b"c", b"d", b"e")}
    for key in (b"a", b"b", b"c"):
        shelf.put(key, entries[key])
    entries[b"a"].used = True
    shelf.put(b"d", entries[b"d"])
    assert list(shelf.entries) == [b"c", b"a", b"d"]
    shelf.put(b"c", entries[b"c"])  # stored again: not an eviction, moves to the back
    shelf.put(b"e", entries[b"e"])
    assert list(shelf.entries) == [b"d", b"c", b"e"]
    assert shelf.evictions == 2 and len(shelf) == 3


def test_shelf_bounds_second_chances() -> None:
    shelf = Shelf(20)
    for i in range(20):
        e = entry()
        e.used = True
        shelf.put(bytes([i]), e)
    shelf.put(b"new", entry())
    assert len(shelf) == 20
    assert shelf.evictions == 1


class _Answers(Plugin):
    """Stands for the next plugin: answers every query with one A record, without waiting."""

    calls = 0

    def handle(self, request: Request) -> Result:
        self.calls += 1
        r = dns.message.make_response(dns.message.from_wire(request.wire))
        if r.question:
            r.answer.append(dns.rrset.from_text(r.question[0].name, 300, "IN", "A", "192.0.2.1"))
        return r


def answered(plugin: CachePlugin, request: Request) -> Reply:
    """The cache's reply to ``request`` when nothing it asks has to wait."""
    result = plugin.handle(request)
    assert not isinstance(result, Pending)
    return result


def test_queries_without_a_question_pass_through_unstored() -> None:
    plugin = CachePlugin(CacheConfig((".",)))
    answers = plugin.next = _Answers()
    no_question = struct.pack(">HHHHHH", 7, 0x0100, 0, 0, 0, 0)
    for _ in range(2):
        assert answered(plugin, Request(no_question))
    assert answers.calls == 2
    assert len(plugin.success) == len(plugin.denial) == 0


def test_a_full_cache_stays_small() -> None:
    """Memory per entry, typical one-record answers (a full 10,000-entry cache: under 6 MB)."""
    import gc
    import sys
    import tracemalloc

    count = 800
    plugin = CachePlugin(CacheConfig((".",)))
    requests = []
    replies: dict[bytes, bytes] = {}
    for i in range(count):
        q = dns.message.make_query(f"host-{i}.ns{i % 50}.svc.cluster.local.", "A")
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "10.1.2.3"))
        request = Request(q.to_wire())
        requests.append(request)
        replies[request.key] = r.to_wire()

    class Prepared(_Answers):
        def handle(self, request: Request) -> Result:
            return replies[request.key]

    plugin.next = Prepared()
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for request in requests:
            answered(plugin, request)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(plugin.success) == count
    used += sum(sys.getsizeof(key) for key in replies)  # the keys were made before
    assert used / count < 600, used / count


def test_names_are_cached_case_blind() -> None:
    plugin = CachePlugin(CacheConfig((".",)))
    answers = _Answers()
    plugin.next = answers
    answered(plugin, Request(dns.message.make_query("www.example.org", "A").to_wire()))
    answered(plugin, Request(dns.message.make_query("WWW.Example.ORG", "A").to_wire()))
    assert answers.calls == 1
