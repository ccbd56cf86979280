"""forward sends one upstream query for identical queries in flight (coalescing).

CoreDNS sends every client query upstream; 500 identical misses make 500
upstream queries, and as many chances for a spoofer's forged reply to match
one. We send one per question (name without letter case, type, class, DO,
CD, plus RD and EDNS) at a time; every waiter gets the reply with its own ID
and question casing. Upstreams are real servers on 127.0.0.x.
"""

from __future__ import annotations

import random
import socket

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio

from pycorefile import PluginError, Request, Server
from pycorefile.corefile import parse_corefile
from pycorefile.testing import Upstream, make_query, query, serve
from pycorefile_plugins.forward import Forwarder, ForwardPlugin, ForwardStats, parse_forward

RECORDS = {("hot.example.", "A"): ["192.0.2.7"]}


def corefile(body: str) -> str:
    return f".:0 {{\n bind 127.0.0.1\n {body}\n}}\n"


def forwarder(server: Server) -> Forwarder:
    assert server.config is not None
    (found,) = server.config.find("forward")
    assert isinstance(found, ForwardPlugin)
    return found.forwarders[0]


def mixed_case(name: str, rng: random.Random) -> str:
    return "".join(c.upper() if rng.random() < 0.5 else c for c in name)


PER_SOCKET = 25
"""Queries per client socket: the replies come all at once, and each socket's
receive buffer must hold its share."""


async def burst(
    server: Server, queries: list[dns.message.Message], timeout: float = 8.0
) -> dict[int, dns.message.Message]:
    """Send every query at once (over a few UDP sockets); the replies by ID.

    Bounded in time: queries not answered within ``timeout`` have no reply.
    """
    replies: dict[int, dns.message.Message] = {}

    async def one_socket(share: list[dns.message.Message]) -> None:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.connect(("127.0.0.1", server.port()))
            for q in share:
                await sock.send(q.to_wire())
            got = 0
            while got < len(share):
                r = dns.message.from_wire(await sock.recv(65535))
                replies[r.id] = r
                got += 1

    with trio.move_on_after(timeout):
        async with trio.open_nursery() as nursery:
            for start in range(0, len(queries), PER_SOCKET):
                nursery.start_soon(one_socket, queries[start : start + PER_SOCKET])
    return replies


class FirstSilent:
    """Answers every query but the first one for ``name`` (which it ignores)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen = 0

    def __call__(self, q: dns.message.Message) -> dns.message.Message | None:
        r = dns.message.make_response(q)
        if q.question[0].name.to_text().lower() == self.name:
            self.seen += 1
            if self.seen == 1:
                return None
            r.answer.append(dns.rrset.from_text(self.name, 60, "IN", "A", "192.0.2.9"))
        return r


# -- One upstream query, every waiter answered ----------------------------------------


async def test_identical_queries_in_flight_make_one_upstream_query() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2", delay=0.5)
    rng = random.Random(7)
    queries: list[dns.message.Message] = []
    for qid in rng.sample(range(65536), 300):
        q = make_query(mixed_case("hot.example.", rng), "A")
        q.id = qid
        queries.append(q)
    async with up.running(), serve(corefile(f"forward . {up.address}")) as server:
        replies = await burst(server, queries)
        assert forwarder(server).flights == {}  # nothing left behind
    assert up.count("hot.example.", "A") == 1
    assert len(replies) == len(queries)
    for q in queries:
        r = replies[q.id]
        assert r.rcode() == dns.rcode.NOERROR
        assert r.question[0].name.to_text() == q.question[0].name.to_text()  # its own casing
        assert [rd.to_text() for rrset in r.answer for rd in rrset] == ["192.0.2.7"]


async def test_different_questions_and_edns_are_not_merged() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2", delay=0.3)
    queries: list[dns.message.Message] = []
    for i in range(4):
        for edns in (False, True):
            for do in (False, True) if edns else (False,):
                q = make_query("hot.example.", "A", edns=edns, do=do)
                q.id = len(queries) + 100 * i + 1
                queries.append(q)
        other = make_query("hot.example.", "AAAA")
        other.id = 1000 + i
        queries.append(other)
    async with up.running(), serve(corefile(f"forward . {up.address}")) as server:
        replies = await burst(server, queries)
    # One upstream query each for: plain A, EDNS A, EDNS+DO A, plain AAAA.
    assert up.count("hot.example.", "A") == 3
    assert up.count("hot.example.", "AAAA") == 1
    assert len(replies) == len(queries)
    for q in queries:
        r = replies[q.id]
        assert r.edns == q.edns  # an OPT record exactly when the client sent one


async def test_a_tcp_waiter_gets_the_whole_answer_a_udp_one_truncated() -> None:
    # The UDP query leads; the TCP one waits on it: the truncated UDP reply is
    # asked again over TCP because a waiter can take it whole.
    big = {("big.example.", "TXT"): [f'"{"x" * 200}{i}"' for i in range(8)]}
    up = Upstream(records=big, host="127.0.0.2", delay=0.3, truncate_udp=True)
    async with up.running(), serve(corefile(f"forward . {up.address}")) as server:
        results: dict[str, dns.message.Message] = {}

        async def ask(proto: str) -> None:
            results[proto] = await query(server, "big.example.", "TXT", proto=proto, timeout=5)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "udp")
            await trio.sleep(0.05)
            nursery.start_soon(ask, "tcp")
    assert results["udp"].flags & dns.flags.TC
    assert not results["tcp"].flags & dns.flags.TC
    assert sum(len(rrset) for rrset in results["tcp"].answer) == 8
    assert [p for n, t, p in up.queries if n == "big.example."] == ["udp", "tcp"]


@pytest.mark.parametrize("limit", [3])
async def test_waiters_per_upstream_query_are_bounded(
    limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("pycorefile_plugins.forward._plugin.MAX_FOLLOWERS", limit)
    up = Upstream(records=dict(RECORDS), host="127.0.0.2", delay=0.5)
    queries: list[dns.message.Message] = []
    for qid in range(1, 11):
        q = make_query("hot.example.", "A")
        q.id = qid
        queries.append(q)
    async with up.running(), serve(corefile(f"forward . {up.address}")) as server:
        replies = await burst(server, queries)
    assert len(replies) == 10
    assert all(r.rcode() == dns.rcode.NOERROR for r in replies.values())
    # Ten queries, one upstream query per runner and its three followers at most.
    assert up.count("hot.example.", "A") == 3


# -- A waiter's own deadline or cancellation ends nothing for the others ----------------


async def test_the_first_querys_deadline_does_not_end_the_upstream_query_for_the_others() -> None:
    # The first query's only try outlasts its 5 s deadline (read_timeout 6s):
    # it gets SERVFAIL, and the second, which arrived a second later, makes the
    # next try itself and gets the answer.
    handler = FirstSilent("late.example.")
    up = Upstream(host="127.0.0.2", handler=handler)
    body = "forward . {0} {{\n read_timeout 6s\n max_fails 0\n }}"
    async with up.running(), serve(corefile(body.format(up.address))) as server:
        results: dict[str, dns.message.Message] = {}

        async def ask(label: str) -> None:
            results[label] = await query(server, "late.example.", "A", timeout=9)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "first")
            await trio.sleep(1.0)
            nursery.start_soon(ask, "second")
    assert results["first"].rcode() == dns.rcode.SERVFAIL
    assert results["second"].rcode() == dns.rcode.NOERROR
    assert [rd.to_text() for rd in results["second"].answer[0]] == ["192.0.2.9"]
    assert handler.seen == 2  # the first try, then the second waiter's


def _request(name: str, qid: int) -> Request:
    q = make_query(name, "A")
    q.id = qid
    return Request(q.to_wire(), ("127.0.0.1", 40000 + qid), "udp")


async def test_a_cancelled_first_query_hands_the_upstream_query_to_the_others() -> None:
    # Cancellation of one waiting query (its client gone, the server stopping
    # it) must not fail the identical queries waiting with it.
    handler = FirstSilent("gone.example.")
    up = Upstream(host="127.0.0.2", handler=handler)
    async with up.running():
        text = f".:53 {{\n forward . {up.address} {{\n read_timeout 3s\n max_fails 0\n }}\n}}\n"
        (config,) = parse_forward(parse_corefile(text)[0].directives)
        fwd = Forwarder(config, ForwardStats())
        try:
            results: dict[int, tuple[bytes, int] | str] = {}

            async def ask(qid: int, scope: trio.CancelScope) -> None:
                with scope:
                    try:
                        results[qid] = await fwd.forward(_request("gone.example.", qid))
                    except PluginError as exc:
                        results[qid] = exc.message

            first = trio.CancelScope()
            with trio.fail_after(5):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(ask, 1, first)
                    await trio.sleep(0.1)
                    for qid in (2, 3):
                        nursery.start_soon(ask, qid, trio.CancelScope())
                    await trio.sleep(0.2)
                    assert len(fwd.flights) == 1
                    first.cancel()
        finally:
            for proxy in fwd.proxies:
                proxy.close()
    assert 1 not in results  # cancelled
    for qid in (2, 3):
        result = results[qid]
        assert isinstance(result, tuple), result
        reply = dns.message.from_wire(result[0])
        assert reply.id == qid
        assert [rd.to_text() for rd in reply.answer[0]] == ["192.0.2.9"]
    assert handler.seen == 2  # the cancelled try and one more, shared by both waiters
    assert fwd.flights == {} and fwd.in_flight == 0
