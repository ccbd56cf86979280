"""loadbalance: CoreDNS's round robin (CNAMEs first, A/AAAA and MX shuffled, NOERROR
only), on bytes and on messages, on the chain and on cache hits of the fast path."""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from pycorefile import CorefileError, Reply, Request, Server, load_config
from pycorefile.testing import NextHandler, Upstream, chain, query, run, serve, setup_plugin
from pycorefile_plugins.loadbalance import (
    LoadbalancePlugin,
    Records,
    parse_loadbalance,
    prefer_subnets,
    reorder_wire,
    round_robin,
)
from pycorefile_plugins.loadbalance._parse import LoadbalanceConfig
from pycorefile_plugins.loadbalance._reorder import reorder_reply

A, AAAA, CNAME, MX, TXT = 1, 28, 5, 15, 16
ADDRESSES = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]
QUERIES = 120
"""Each of 4 addresses comes first about 30 times in 120 shuffled replies; fewer than
5 has a probability below 1e-8 (binomial), so the bound cannot flake."""
AT_LEAST = 5


def reverse(n: int) -> Sequence[int]:
    """A fixed 'random' order: every shuffled group reversed."""
    return range(n - 1, -1, -1)


# -- The order, on types alone ------------------------------------------------------------


@pytest.mark.parametrize(
    ("types", "expected"),
    [
        ([], []),
        ([A], [0]),
        ([A, A, A], [2, 1, 0]),  # only addresses: shuffled
        ([AAAA, AAAA], [1, 0]),
        ([CNAME, A, A], [0, 2, 1]),  # CNAME first, addresses shuffled
        ([A, CNAME, A], [1, 2, 0]),  # the CNAME moves in front
        ([A, TXT, MX, MX, CNAME, AAAA], [4, 1, 5, 0, 3, 2]),  # CNAME, rest, addresses, MX
        ([MX, MX, MX], [2, 1, 0]),  # MX records are shuffled too
        ([TXT, TXT], [0, 1]),  # other types keep their order
        ([CNAME, CNAME, A], [0, 1, 2]),  # CNAMEs in their own order
    ],
)
def test_round_robin_order(types: list[int], expected: list[int]) -> None:
    assert round_robin(types, reverse) == expected


def test_prefer_puts_preferred_subnets_first_in_their_order() -> None:
    import ipaddress

    addresses = [
        ipaddress.ip_address(a)
        for a in ("198.51.100.1", "192.0.2.1", "10.0.0.1", "192.0.2.2", "10.0.0.2")
    ]
    types = [A] * 5
    subnets = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("192.0.2.0/24")]
    order = prefer_subnets(range(5), types, addresses, subnets)
    assert order == [2, 4, 1, 3, 0]
    with_others = prefer_subnets(
        range(4), [TXT, MX, A, CNAME], [None, None, addresses[2], None], subnets
    )
    assert with_others == [3, 2, 1, 0]  # CNAME, addresses, MX, the rest (CoreDNS's prefer order)


# -- On bytes --------------------------------------------------------------------------------


def reply_wire(answer: list[dns.rrset.RRset], qname: str = "www.example.", **kw: object) -> bytes:
    q = dns.message.make_query(qname, "A")
    r = dns.message.make_response(q)
    r.answer.extend(answer)
    for name, value in kw.items():
        getattr(r, name).extend(value)
    return r.to_wire()


def plan_reverse(section: int, types: Sequence[int], records: Records) -> list[int]:
    return round_robin(types, reverse)


def answer_rdata(wire: bytes) -> list[str]:
    msg = dns.message.from_wire(wire, one_rr_per_rrset=True)
    return [f"{rrset.name} {rrset[0]}" for rrset in msg.answer]


def test_addresses_owned_by_the_question_move_as_bytes() -> None:
    wire = reply_wire([dns.rrset.from_text_list("www.example.", 60, "IN", "A", ADDRESSES[:3])])
    out = reorder_wire(wire, plan_reverse)
    assert out is not None and out != wire and len(out) == len(wire)
    assert answer_rdata(out) == answer_rdata(wire)[::-1]


def test_a_record_others_point_into_is_not_moved_as_bytes_but_decoded() -> None:
    # Owned by a name not in the question: the first record spells it, the others
    # point into it. Moving it as bytes would break them.
    wire = reply_wire([dns.rrset.from_text_list("x.example.", 60, "IN", "A", ADDRESSES[:3])])
    assert reorder_wire(wire, plan_reverse) is None
    out = reorder_reply(wire, plan_reverse)
    assert answer_rdata(out) == answer_rdata(wire)[::-1]


def test_mx_targets_pointed_at_by_glue_are_decoded_and_stay_correct() -> None:
    mx = dns.rrset.from_text_list(
        "www.example.", 60, "IN", "MX", ["10 mail1.example.", "20 mail2.example."]
    )
    glue = [
        dns.rrset.from_text("mail1.example.", 60, "IN", "A", "192.0.2.1"),
        dns.rrset.from_text("mail2.example.", 60, "IN", "A", "192.0.2.2"),
    ]
    wire = reply_wire([mx], additional=glue)
    assert reorder_wire(wire, plan_reverse) is None  # the glue points into the MX records
    out = reorder_reply(wire, plan_reverse)
    msg = dns.message.from_wire(out, one_rr_per_rrset=True)
    assert answer_rdata(out) == answer_rdata(wire)[::-1]
    assert sorted(f"{rrset.name} {rrset[0]}" for rrset in msg.additional) == [
        "mail1.example. 192.0.2.1",
        "mail2.example. 192.0.2.2",
    ]


def test_only_noerror_replies_are_reordered() -> None:
    q = dns.message.make_query("www.example.", "A")
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.REFUSED)
    r.answer.append(dns.rrset.from_text_list("www.example.", 60, "IN", "A", ADDRESSES))
    wire = r.to_wire()
    assert reorder_reply(wire, plan_reverse) is wire


# -- As a plugin, without sockets ------------------------------------------------------------


def reversing() -> LoadbalancePlugin:
    """loadbalance as the Corefile makes it, its shuffles replaced by reversals."""
    plugin = setup_plugin(LoadbalancePlugin, "loadbalance")
    assert isinstance(plugin, LoadbalancePlugin)
    plugin.permutation = reverse
    return plugin


def test_a_message_reply_is_reordered_cname_first() -> None:
    rest = NextHandler(
        answer=[
            "target.example. 300 IN A 192.0.2.1",
            "target.example. 300 IN A 192.0.2.2",
            "@ 300 IN CNAME target.example.",
        ]
    )
    reply = run(chain(reversing(), rest), "www.example.")
    flat = [(rrset.rdtype, str(rrset[0])) for rrset in reply.answer for _ in [0]]
    assert flat[0] == (CNAME, "target.example.")
    assert [str(rd) for rrset in reply.answer[1:] for rd in rrset] == ["192.0.2.2", "192.0.2.1"]


def in_order(request: Request) -> bytes:
    """A reply of ADDRESSES in this order (dnspython shuffles an RRset it renders)."""
    r = dns.message.make_response(request.message)
    r.answer.append(dns.rrset.from_text_list(request.qname, 123, "IN", "A", ADDRESSES))
    wire: bytes = r.to_wire(want_shuffle=False)
    return wire


def test_a_bytes_reply_is_reordered_and_keeps_ttls_and_flags() -> None:
    rest = NextHandler(reply=in_order)
    as_sent = run(rest, "www.example.")
    reply = run(chain(reversing(), rest), "www.example.")
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.QR
    assert [str(rd) for rd in reply.answer[0]] == [str(rd) for rd in as_sent.answer[0]][::-1]
    assert reply.answer[0].ttl == 123


def test_nxdomain_passes_untouched() -> None:
    rest = NextHandler(
        rcode=dns.rcode.NXDOMAIN,
        authority=["example. 300 IN SOA ns.example. h.example. 1 2 3 4 5"],
        as_bytes=True,
    )
    reply = run(chain(reversing(), rest), "nothing.example.")
    assert reply.rcode() == dns.rcode.NXDOMAIN and len(reply.authority) == 1


# -- Setup -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "policy", "prefer"),
    [
        ("loadbalance", "round_robin", ()),
        ("loadbalance round_robin", "round_robin", ()),
        ("loadbalance {\n prefer 10.9.20.0/24 192.168.1.1/24\n }", "round_robin", 2),
        ("loadbalance round_robin {\n prefer fd00::/8\n }", "round_robin", 1),
    ],
)
def test_setup(body: str, policy: str, prefer: object) -> None:
    config = load_config(f".:53 {{\n {body}\n whoami\n}}\n")
    (plugin,) = config.find("loadbalance")
    assert isinstance(plugin, LoadbalancePlugin)
    assert plugin.config.policy == policy
    assert len(plugin.config.prefer) == (prefer or 0)


@pytest.mark.parametrize(
    ("body", "where", "message"),
    [
        ("loadbalance round_robin x", "2:26", "unknown property for round_robin"),
        ("loadbalance weighted", "2:2", "missing weight file argument"),
        ("loadbalance weighted a b", "2:25", "unexpected argument(s)"),
        ("loadbalance random", "2:14", "unknown policy: random"),
        ("loadbalance {\n reload 10s\n }", "3:2", "unknown property 'reload'"),
        (
            "loadbalance weighted w.txt {\n prefer 10.0.0.0/8\n }",
            "3:2",
            "unknown property 'prefer'",
        ),
        ("loadbalance weighted w.txt {\n reload\n }", "3:2", "reload duration value is missing"),
        ("loadbalance weighted w.txt {\n reload 1x\n }", "3:9", "invalid reload duration '1x'"),
        ("loadbalance {\n prefer 10.0.0.300/8\n }", "3:9", 'invalid CIDR "10.0.0.300/8"'),
        ("loadbalance {\n prefer 10.0.0.1\n }", "3:9", 'invalid CIDR "10.0.0.1"'),
    ],
)
def test_setup_errors(body: str, where: str, message: str) -> None:
    with pytest.raises(CorefileError) as info:
        load_config(f".:53 {{\n {body}\n whoami\n}}\n")
    assert f"Corefile:{where} - plugin/loadbalance: {message}" in str(info.value)


def test_parse_is_pure_and_a_later_policy_wins() -> None:
    plugin = setup_plugin(LoadbalancePlugin, "loadbalance {\n prefer 10.0.0.0/8\n }")
    assert isinstance(plugin, LoadbalancePlugin) and len(plugin.config.prefer) == 1
    config = load_config(".:53 {\n loadbalance weighted w.txt\n loadbalance\n whoami\n}\n")
    (lb,) = config.find("loadbalance")
    assert isinstance(lb, LoadbalancePlugin) and lb.config.policy == "round_robin"
    assert parse_loadbalance(()) == LoadbalanceConfig()


# -- Served ----------------------------------------------------------------------------------


class Counting(LoadbalancePlugin):
    """loadbalance, counting which hook reordered a reply."""

    on_reply_calls = 0
    on_known_calls = 0

    def on_reply(self, request: Request, reply: Reply) -> Reply:
        type(self).on_reply_calls += 1
        return super().on_reply(request, reply)

    def on_known_reply(self, reply: bytes) -> bytes:
        type(self).on_known_calls += 1
        return super().on_known_reply(reply)


RECORDS = {
    ("www.example.", "A"): ADDRESSES,
    ("www.example.", "AAAA"): ["2001:db8::1", "2001:db8::2", "2001:db8::3"],
    ("mail.example.", "MX"): ["10 a.example.", "20 b.example.", "30 c.example."],
}


def unshuffled(r: dns.message.Message) -> bytes:
    """``r`` rendered with every RRset in the order given (dnspython shuffles by default):
    any change of order the client sees is loadbalance's."""
    wire: bytes = r.to_wire(want_shuffle=False)
    return wire


def in_given_order(q: dns.message.Message) -> bytes:
    """An upstream that answers RECORDS in their order."""
    question = q.question[0]
    r = dns.message.make_response(q)
    values = RECORDS.get((question.name.to_text().lower(), dns.rdatatype.to_text(question.rdtype)))
    if values:
        r.answer.append(dns.rrset.from_text_list(question.name, 300, "IN", question.rdtype, values))
    return unshuffled(r)


def cname_last(q: dns.message.Message) -> bytes:
    """An upstream that puts the CNAME after the addresses it leads to."""
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text_list("target.example.", 300, "IN", "A", ADDRESSES))
    r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "CNAME", "target.example."))
    return unshuffled(r)


@asynccontextmanager
async def serving(
    body: str, handler: Callable[[dns.message.Message], bytes] = in_given_order
) -> AsyncIterator[tuple[Server, Upstream]]:
    up = Upstream(host="127.0.0.2", handler=handler)
    Counting.on_reply_calls = Counting.on_known_calls = 0
    async with up.running():
        text = f".:0 {{\n bind 127.0.0.1\n {body}\n forward . {up.address}\n}}\n"
        async with serve(text, plugins={"loadbalance": Counting}) as server:
            yield server, up


def first_records(replies: list[dns.message.Message]) -> Counter[str]:
    return Counter(str(r.answer[0][0]) for r in replies)


async def ask(
    server: Server, name: str, rdtype: str, times: int = QUERIES
) -> list[dns.message.Message]:
    return [await query(server, name, rdtype) for _ in range(times)]


async def test_cache_hits_on_the_fast_path_are_shuffled() -> None:
    async with serving("loadbalance\n cache") as (server, up):
        assert server.config is not None
        block = server.config.blocks[0]
        assert block.known is not None and block.known_by == "cache"  # the fast path is kept
        replies = await ask(server, "www.example.", "A")
    assert up.count("www.example.", "A") == 1  # every other reply was a cache hit
    assert Counting.on_reply_calls == 1  # the miss, through the chain
    assert Counting.on_known_calls == QUERIES - 1  # the hits, on the fast path
    firsts = first_records(replies)
    assert set(firsts) == set(ADDRESSES)
    assert min(firsts.values()) >= AT_LEAST, firsts
    for reply in replies:
        assert reply.rcode() == dns.rcode.NOERROR
        assert sorted(str(rd) for rrset in reply.answer for rd in rrset) == ADDRESSES
        assert all(0 < rrset.ttl <= 300 for rrset in reply.answer)


async def test_without_cache_every_reply_is_shuffled_through_the_chain() -> None:
    async with serving("log\n loadbalance") as (server, _up):
        replies = await ask(server, "www.example.", "AAAA")
    assert Counting.on_reply_calls == QUERIES and Counting.on_known_calls == 0
    firsts = first_records(replies)
    assert len(firsts) == 3 and min(firsts.values()) >= AT_LEAST, firsts


async def test_cnames_come_first_and_the_addresses_still_vary() -> None:
    async with serving("loadbalance\n cache", cname_last) as (server, _up):
        replies = await ask(server, "www.example.", "A")
    seconds: Counter[str] = Counter()
    for reply in replies:
        flat = [(rrset.rdtype, str(rd)) for rrset in reply.answer for rd in rrset]
        assert flat[0] == (CNAME, "target.example.")
        assert sorted(value for _t, value in flat[1:]) == ADDRESSES
        seconds[flat[1][1]] += 1
    assert set(seconds) == set(ADDRESSES) and min(seconds.values()) >= AT_LEAST, seconds


async def test_mx_records_are_shuffled() -> None:
    async with serving("loadbalance\n cache") as (server, _up):
        replies = await ask(server, "mail.example.", "MX")
    firsts = Counter(str(r.answer[0][0]).split()[0] for r in replies)
    assert set(firsts) == {"10", "20", "30"} and min(firsts.values()) >= AT_LEAST, firsts


async def test_prefer_keeps_preferred_addresses_first() -> None:
    body = "loadbalance round_robin {\n prefer 192.0.2.3/32 192.0.2.1/32\n }\n cache"
    async with serving(body) as (server, _up):
        replies = await ask(server, "www.example.", "A", 40)
    thirds: Counter[str] = Counter()
    for reply in replies:
        order = [str(rd) for rrset in reply.answer for rd in rrset]
        assert order[:2] == ["192.0.2.3", "192.0.2.1"]
        thirds[order[2]] += 1
    # The rest follow, shuffled among themselves (each third about 20 times in 40).
    assert set(thirds) == {"192.0.2.2", "192.0.2.4"} and min(thirds.values()) >= AT_LEAST


async def test_other_rcodes_are_not_touched() -> None:
    def refused(q: dns.message.Message) -> bytes:
        r = dns.message.from_wire(cname_last(q))
        r.set_rcode(dns.rcode.REFUSED)
        return unshuffled(r)

    async with serving("loadbalance", refused) as (server, _up):
        replies = await ask(server, "www.example.", "A", 30)
    orders = {tuple(f"{rrset.rdtype} {rd}" for rrset in r.answer for rd in rrset) for r in replies}
    assert len(orders) == 1  # as the upstream sent it, every time
    assert replies[0].rcode() == dns.rcode.REFUSED
    assert dns.name.from_text("target.example.") == replies[0].answer[0].name
