"""forward against the real server: answers, failover, spoofing, policies, routing, limits.

Upstreams are ``pycorefile.testing.Upstream`` servers on 127.0.0.x. Upstream
query counts are taken for a name (no loop probe is sent without the *loop*
plugin, but a name keeps the counts about the query at hand).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import trio

from pycorefile import Server, load_config
from pycorefile.testing import Upstream, make_query, query, query_wire, serve
from pycorefile_plugins.forward import ForwardPlugin
from pycorefile_plugins.forward._proxy import UDP_CHANNELS, Proxy, _UdpChannel

from .test_prometheus import scrape

RECORDS = {
    ("a.example.", "A"): ["192.0.2.1"],
    ("www.example.org.", "A"): ["192.0.2.10"],
    ("www.other.test.", "A"): ["192.0.2.20"],
}


def corefile(body: str) -> str:
    return f".:0 {{\n bind 127.0.0.1\n {body}\n}}\n"


def plugin(server: Server) -> ForwardPlugin:
    assert server.config is not None
    (found,) = server.config.find("forward")
    assert isinstance(found, ForwardPlugin)
    return found


@asynccontextmanager
async def upstreams(*ups: Upstream) -> AsyncIterator[tuple[Upstream, ...]]:
    async with AsyncExitStack() as stack:
        for up in ups:
            await stack.enter_async_context(up.running())
        yield ups


@asynccontextmanager
async def serving(template: str, *ups: Upstream) -> AsyncIterator[Server]:
    """Start the upstreams, then serve ``template`` with ``{0}``, ``{1}``... their addresses."""
    async with upstreams(*ups):
        body = template.format(*(up.address for up in ups))
        async with serve(corefile(body)) as server:
            yield server


def answers(msg: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in msg.answer for rd in rrset)


def samples(server: Server, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The samples of one metric family of the forward plugin, by their labels."""
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for fam in plugin(server).metrics():
        for s in fam.samples:
            if s.name == family:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


def answer_a(q: dns.message.Message) -> dns.message.Message:
    """A response to ``q`` with one A record, 192.0.2.1, for the name asked."""
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.1"))
    return r


def live(proxy: Proxy) -> list[_UdpChannel]:
    """The UDP channels a proxy hands queries to now."""
    return [channel for channel in proxy.channels if channel is not None]


def waited_on(proxy: Proxy) -> bool:
    """Whether a query waits for its reply on one of the proxy's UDP channels."""
    return any(channel.pending for channel in live(proxy))


async def wait_until(what: str, condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Poll ``condition`` every 10 ms until it holds; fail after ``seconds``."""
    with trio.move_on_after(seconds):
        while not condition():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out after {seconds:g}s waiting until {what}")


def elapsed_since(start: float) -> float:
    return time.perf_counter() - start


# -- Answers pass through -------------------------------------------------------


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_answer_passes_through_with_id_and_question_echoed(proto: str) -> None:
    seen: list[tuple[int, object]] = []

    def record(q: dns.message.Message) -> dns.message.Message:
        seen.append((q.id, up.client))
        return answer_a(q)

    up = Upstream(host="127.0.0.2", handler=record)
    # expire 0: no socket is reused, each try has a fresh source port.
    async with (
        up.running(),
        serve(corefile(f"forward . {up.address} {{\n expire 0\n }}")) as server,
    ):
        for _ in range(3):
            q = make_query("A.ExAmPle.", "A")
            q.id = 0x1234
            r = await query(server, q, proto=proto)
            assert r.id == 0x1234
            assert r.question[0].name.to_text() == "A.ExAmPle."  # the client's letter case
            assert r.rcode() == dns.rcode.NOERROR
            assert answers(r) == ["192.0.2.1"]
    ids = {qid for qid, _ in seen[-3:]}
    assert ids != {0x1234}, "the upstream query must carry a fresh random ID"
    if proto == "udp":
        ports = {client[1] for _, client in seen[-3:]}  # type: ignore[index]
        assert len(ports) > 1, "each UDP try must come from a fresh source port"


async def test_udp_sockets_are_shared_then_replaced_after_expire() -> None:
    ports: list[object] = []

    def record(q: dns.message.Message) -> dns.message.Message:
        if q.question[0].rdtype == dns.rdatatype.A:
            assert isinstance(up.client, tuple)
            ports.append(up.client[1])
        return answer_a(q)

    up = Upstream(host="127.0.0.2", handler=record)
    async with (
        up.running(),
        serve(corefile(f"forward . {up.address} {{\n expire 1s\n }}")) as server,
    ):
        for i in range(20):
            assert answers(await query(server, f"n{i}.example.", "A")) == ["192.0.2.1"]
        first = set(ports)
        await trio.sleep(1.1)
        for i in range(20):
            assert answers(await query(server, f"m{i}.example.", "A")) == ["192.0.2.1"]
        later = set(ports[20:])
    # At most UDP_CHANNELS sockets at a time, as CoreDNS reuses its connections;
    # once expired, every one of them is replaced by a socket on a new port.
    assert 1 <= len(first) <= UDP_CHANNELS
    assert 1 <= len(later) <= UDP_CHANNELS
    assert later != first


async def test_a_replaced_socket_closes_once_its_last_query_times_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("pycorefile_plugins.forward._proxy.UDP_CHANNELS", 1)
    # Only a query replaces the expired socket here, not the periodic sweep.
    monkeypatch.setattr("pycorefile_plugins.forward._proxy.Proxy.sweep", lambda self: None)
    silent = Upstream(host="127.0.0.2", mode="silent")
    # One try per query, and a try timeout far past expire: the second query
    # must replace the socket while the first still waits on it, however slowly
    # a loaded machine gets the second query there.
    body = (
        "forward . {0} {{\n expire 100ms\n read_timeout 3s\n"
        " max_connect_attempts 1\n max_fails 0\n}}"
    )
    async with serving(body, silent) as server:
        proxy = plugin(server).forwarders[0].proxies[0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(query, server, "first.example", "A", timeout=10))
            await wait_until("the first query waits on a socket", lambda: waited_on(proxy))
            (old,) = live(proxy)
            await trio.sleep_until(old.retire_at)  # the socket is past expire now
            nursery.start_soon(partial(query, server, "second.example", "A", timeout=10))
            await wait_until("the second query replaced the socket", lambda: live(proxy) != [old])
            assert old.retired
            assert old.pending  # the first query still waits on it
            assert not old.closed
        # Both queries timed out: nothing waits on the old socket any more.
        assert old.closed
        assert old.sock.fileno() == -1


async def test_raw_question_bytes_are_echoed_exactly() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with up.running(), serve(corefile(f"forward . {up.address}")) as server:
        q = make_query("WwW.ExAmPlE.OrG.", "A")
        q.id = 0xBEEF
        wire = q.to_wire()
        reply = await query_wire(server, wire)
    assert reply is not None
    assert reply[:2] == b"\xbe\xef"
    end = 12 + len(b"\x03WwW\x07ExAmPlE\x03OrG\x00") + 4
    assert reply[12:end] == wire[12:end]
    assert reply[3] & 0xF == dns.rcode.NOERROR


async def test_edns_payload_is_ours_and_no_opt_for_plain_clients() -> None:
    def with_opt(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.use_edns(0, payload=4096)  # even to a query without EDNS, as some servers do
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.1"))
        return r

    up = Upstream(host="127.0.0.2", handler=with_opt)
    async with up.running(), serve(corefile(f"forward . {up.address}")) as server:
        edns = await query(server, "a.example", "A", edns=True, payload=4096)
        plain = await query(server, "a.example", "A")
    assert edns.edns == 0 and edns.payload == 1232
    assert answers(edns) == ["192.0.2.1"]
    assert plain.edns == -1
    assert answers(plain) == ["192.0.2.1"]


@pytest.mark.parametrize(
    ("mode", "name", "rcode"),
    [
        ("answer", "missing.example.", dns.rcode.NXDOMAIN),
        ("servfail", "a.example.", dns.rcode.SERVFAIL),
        ("refused", "a.example.", dns.rcode.REFUSED),
    ],
)
async def test_upstream_rcodes_pass_through(mode: str, name: str, rcode: int) -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2", mode=mode)
    async with up.running(), serve(corefile(f"forward . {up.address}")) as server:
        r = await query(server, name, "A")
    assert r.rcode() == rcode
    assert up.count(name, "A") == 1


async def test_chaos_class_is_forwarded() -> None:
    def chaos(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 0, "CH", "TXT", '"upstream"'))
        return r

    up = Upstream(host="127.0.0.2", handler=chaos)
    async with up.running(), serve(corefile(f"forward . {up.address}")) as server:
        q = dns.message.make_query("version.bind.", "TXT", rdclass=dns.rdataclass.CH)
        r = await query(server, q)
    assert r.rcode() == dns.rcode.NOERROR
    assert answers(r) == ['"upstream"']


# -- Failure: failover, all down, garbage ----------------------------------------


async def test_failover_from_a_silent_upstream_within_the_try_timeout() -> None:
    silent = Upstream(host="127.0.0.2", mode="silent")
    good = Upstream(records=dict(RECORDS), host="127.0.0.3")
    body = "forward . {0} {1} {{\n policy sequential\n read_timeout 400ms\n}}"
    async with serving(body, silent, good) as server:
        start = time.perf_counter()
        r = await query(server, "a.example", "A")
        took = elapsed_since(start)
    assert r.rcode() == dns.rcode.NOERROR and answers(r) == ["192.0.2.1"]
    assert silent.count("a.example.", "A") == 1
    assert 0.35 < took < 0.4 + 0.5, took


async def test_default_try_timeout_is_two_seconds() -> None:
    silent = Upstream(host="127.0.0.2", mode="silent")
    good = Upstream(records=dict(RECORDS), host="127.0.0.3")
    body = "forward . {0} {1} {{\n policy sequential\n}}"
    async with serving(body, silent, good) as server:
        start = time.perf_counter()
        r = await query(server, "a.example", "A", timeout=6)
        took = elapsed_since(start)
    assert answers(r) == ["192.0.2.1"]
    assert 1.9 < took < 2.7, took


async def test_refused_port_fails_over_at_once() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        closed_port = s.getsockname()[1]
    good = Upstream(records=dict(RECORDS), host="127.0.0.3")
    body = f"forward . 127.0.0.2:{closed_port} {{0}} {{{{\n policy sequential\n}}}}"
    async with serving(body, good) as server:
        start = time.perf_counter()
        r = await query(server, "a.example", "A")
        took = elapsed_since(start)
        failures = samples(server, "coredns_forward_upstream_failures_total")
    assert answers(r) == ["192.0.2.1"]
    assert took < 0.5, took  # no waiting for the 2 s try timeout
    assert failures[(("reason", "refused"), ("to", f"127.0.0.2:{closed_port}"))] >= 1


async def test_all_upstreams_silent_is_servfail_within_the_overall_deadline() -> None:
    one = Upstream(host="127.0.0.2", mode="silent")
    two = Upstream(host="127.0.0.3", mode="silent")
    async with serving("forward . {0} {1}", one, two) as server:
        start = time.perf_counter()
        r = await query(server, "a.example", "A", timeout=8)
        took = elapsed_since(start)
    assert r.rcode() == dns.rcode.SERVFAIL  # never a fake NXDOMAIN
    assert 4.8 < took < 6.2, took
    # Four 2 s tries would take 8 s: the 5 s deadline cut the third one short.
    assert one.count("a.example.", "A") + two.count("a.example.", "A") == 3


async def test_every_upstream_refusing_is_servfail_at_once() -> None:
    ports = []
    for host in ("127.0.0.2", "127.0.0.3"):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind((host, 0))
            ports.append(f"{host}:{s.getsockname()[1]}")
    async with serve(corefile(f"forward . {' '.join(ports)}")) as server:
        start = time.perf_counter()
        r = await query(server, "a.example", "A")
        took = elapsed_since(start)
    assert r.rcode() == dns.rcode.SERVFAIL
    assert took < 1.0, took  # no try timeout


async def test_refusal_fails_every_query_in_flight_on_a_shared_socket(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # One shared socket: an ICMP "port unreachable" is reported to whichever
    # call comes next on it, not to the query that caused it; every query in
    # flight there must fail at once, none may wait for its try timeout.
    monkeypatch.setattr("pycorefile_plugins.forward._proxy.UDP_CHANNELS", 1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.2", 0))
        closed = f"127.0.0.2:{s.getsockname()[1]}"
    body = f"forward . {closed} {{\n read_timeout 3s\n max_fails 0\n max_connect_attempts 1\n }}"
    async with serve(corefile(body)) as server:
        rcodes: list[int] = []

        async def ask(i: int) -> None:
            rcodes.append((await query(server, f"q{i}.example", "A", timeout=5)).rcode())

        start = time.perf_counter()
        async with trio.open_nursery() as nursery:
            for i in range(20):
                nursery.start_soon(ask, i)
        took = elapsed_since(start)
    assert rcodes == [dns.rcode.SERVFAIL] * 20
    assert took < 1.5, took  # not one try timeout (3 s)


async def test_garbage_is_dropped_and_counted_then_the_next_upstream_answers() -> None:
    garbage = Upstream(host="127.0.0.2", mode="garbage")
    good = Upstream(records=dict(RECORDS), host="127.0.0.3")
    body = "forward . {0} {1} {{\n policy sequential\n read_timeout 300ms\n}}"
    async with serving(body, garbage, good) as server:
        r = await query(server, "a.example", "A")
        dropped = samples(server, "coredns_forward_mismatched_replies_total")
    assert answers(r) == ["192.0.2.1"]
    assert dropped[(("to", garbage.address),)] >= 1


async def test_wrong_id_only_is_never_accepted() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2", mode="wrong_id")
    body = "forward . {0} {{\n read_timeout 200ms\n}}"
    async with serving(body, up) as server:
        r = await query(server, "a.example", "A")
        dropped = samples(server, "coredns_forward_mismatched_replies_total")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert answers(r) == []
    assert dropped[(("to", up.address),)] >= 2


# -- Spoofing -------------------------------------------------------------------


async def test_spoofed_replies_are_ignored_and_the_right_one_accepted() -> None:
    forged_from_elsewhere: list[bool] = []

    def spoofing(q: dns.message.Message) -> list[dns.message.Message | bytes]:
        qname = q.question[0].name
        if qname.to_text().lower() != "a.example.":
            return [dns.message.make_response(q)]

        def reply(name: str | dns.name.Name, ip: str, qid: int) -> dns.message.Message:
            r = dns.message.make_response(q)
            r.id = qid
            if name != qname:
                r.question[0] = dns.rrset.RRset(
                    dns.name.from_text(str(name)), dns.rdataclass.IN, dns.rdatatype.A
                )
            r.answer.append(dns.rrset.from_text(name, 60, "IN", "A", ip))
            return r

        # A forged reply with the right ID and question, from another address: the
        # connected socket never sees it.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
            forger.bind(("127.0.0.99", 0))
            forger.sendto(reply(qname, "203.0.113.1", q.id).to_wire(), up.client)
            forged_from_elsewhere.append(True)
        return [
            reply(qname, "203.0.113.2", (q.id + 1) & 0xFFFF),  # wrong ID
            reply("b.example.", "203.0.113.3", q.id),  # wrong question
            b"\x00",  # not DNS at all
            reply(dns.name.from_text("A.EXAMPLE."), "192.0.2.1", q.id),  # right, other case
            reply(qname, "203.0.113.4", q.id),  # a second "right" one comes too late
        ]

    up = Upstream(host="127.0.0.2", handler=spoofing)
    async with up.running(), serve(corefile(f"forward . {up.address}")) as server:
        r = await query(server, "a.example", "A")
        # The three bad replies, then (the socket lives on for later queries)
        # the late duplicate: no query waits for it any more.
        with trio.move_on_after(2):
            while True:
                dropped = samples(server, "coredns_forward_mismatched_replies_total")
                if dropped[(("to", up.address),)] >= 4:
                    break
                await trio.sleep(0.01)
    assert forged_from_elsewhere
    assert r.rcode() == dns.rcode.NOERROR
    assert answers(r) == ["192.0.2.1"]
    assert dropped[(("to", up.address),)] == 4


async def test_a_reply_to_another_type_is_not_accepted() -> None:
    def other_type(q: dns.message.Message) -> dns.message.Message:
        r = dns.message.make_response(q)
        r.question[0] = dns.rrset.RRset(q.question[0].name, dns.rdataclass.IN, dns.rdatatype.AAAA)
        return r

    up = Upstream(host="127.0.0.2", handler=other_type)
    body = "forward . {0} {{\n read_timeout 200ms\n}}"
    async with serving(body, up) as server:
        r = await query(server, "a.example", "A")
    assert r.rcode() == dns.rcode.SERVFAIL


# -- Policies -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "check"),
    [
        ("sequential", lambda a, b: a == 12 and b == 0),
        ("round_robin", lambda a, b: a == 6 and b == 6),
        ("random", lambda a, b: a > 0 and b > 0 and a + b == 12),
    ],
)
async def test_policies(policy: str, check: object) -> None:
    one = Upstream(records=dict(RECORDS), host="127.0.0.2")
    two = Upstream(records=dict(RECORDS), host="127.0.0.3")
    body = "forward . {0} {1} {{\n policy " + policy + "\n}}"
    async with serving(body, one, two) as server:
        for _ in range(12):
            r = await query(server, "a.example", "A")
            assert answers(r) == ["192.0.2.1"]
    counts = (one.count("a.example.", "A"), two.count("a.example.", "A"))
    assert check(*counts), counts  # type: ignore[operator]


# -- Routing: several directives, except, next, failover -------------------------


async def test_longest_from_wins_and_uncovered_names_go_to_the_next_plugin() -> None:
    root = Upstream(records=dict(RECORDS), host="127.0.0.2")
    org = Upstream(records=dict(RECORDS), host="127.0.0.3")
    body = "forward . {0}\n forward example.org {1}\n forward only.test {0}"
    async with serving(body, root, org) as server:
        assert answers(await query(server, "www.example.org", "A")) == ["192.0.2.10"]
        assert answers(await query(server, "www.other.test", "A")) == ["192.0.2.20"]
    assert org.count("www.example.org.") == 1 and root.count("www.example.org.") == 0
    assert root.count("www.other.test.") == 1 and org.count("www.other.test.") == 0


async def test_names_not_covered_reach_the_next_plugin() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    body = "forward example.org {0}\n whoami"
    async with serving(body, up) as server:
        r = await query(server, "www.other.test", "A")
        forwarded = await query(server, "www.example.org", "A")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []
    assert [rrset.rdtype for rrset in r.additional] == [dns.rdatatype.A, dns.rdatatype.SRV]
    assert answers(forwarded) == ["192.0.2.10"]
    assert up.count("www.other.test.") == 0


async def test_except_passes_names_on() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    body = "forward . {0} {{\n except example.org\n}}\n whoami"
    async with serving(body, up) as server:
        excepted = await query(server, "www.example.org", "A")
        forwarded = await query(server, "www.other.test", "A")
    assert excepted.answer == [] and len(excepted.additional) == 2  # whoami's answer
    assert answers(forwarded) == ["192.0.2.20"]
    assert up.count("www.example.org.") == 0


async def test_except_falls_back_to_a_shorter_from() -> None:
    root = Upstream(records=dict(RECORDS), host="127.0.0.2")
    org = Upstream(records=dict(RECORDS), host="127.0.0.3")
    body = "forward example.org {1} {{\n except www.example.org\n}}\n forward . {0}"
    async with serving(body, root, org) as server:
        r = await query(server, "www.example.org", "A")
    assert answers(r) == ["192.0.2.10"]
    assert root.count("www.example.org.") == 1 and org.count("www.example.org.") == 0


async def test_next_rcode_tries_the_next_forward() -> None:
    first = Upstream(records=dict(RECORDS), host="127.0.0.2")  # NXDOMAIN for the name
    second = Upstream(records={("only.example.org.", "A"): ["192.0.2.30"]}, host="127.0.0.3")
    body = "forward example.org {0} {{\n next NXDOMAIN\n}}\n forward . {1}"
    async with serving(body, first, second) as server:
        r = await query(server, "only.example.org", "A")
        kept = await query(server, "www.example.org", "A")
    assert answers(r) == ["192.0.2.30"]
    assert first.count("only.example.org.") == 1 and second.count("only.example.org.") == 1
    assert answers(kept) == ["192.0.2.10"] and second.count("www.example.org.") == 0


async def test_next_rcode_without_a_following_plugin_returns_the_answer() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    body = "forward . {0} {{\n next NXDOMAIN\n}}"
    async with serving(body, up) as server:
        r = await query(server, "missing.example", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN


async def test_next_rcode_passes_to_a_following_plugin() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    body = "forward . {0} {{\n next NXDOMAIN\n}}\n whoami"
    async with serving(body, up) as server:
        r = await query(server, "missing.example", "A")
    assert r.rcode() == dns.rcode.NOERROR and len(r.additional) == 2


@pytest.mark.parametrize(
    ("after", "passed_on"), [("\n whoami", ("NOERROR", "whoami")), ("", ("NXDOMAIN", "forward"))]
)
async def test_next_rcode_credits_the_plugin_that_wrote_the_reply(
    after: str, passed_on: tuple[str, str]
) -> None:
    """The response metric's ``plugin`` label names who wrote the reply: the plugin after
    forward when a ``next`` rcode passed the query on, forward for an upstream's answer
    (also a ``next`` rcode's when no plugin follows)."""
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    body = "prometheus 127.0.0.1:0\n forward . {0} {{\n next NXDOMAIN\n}}" + after
    async with serving(body, up) as server:
        missing = await query(server, "missing.example", "A")
        assert answers(await query(server, "a.example", "A")) == ["192.0.2.1"]
        found, _ = await scrape(server)
    assert dns.rcode.to_text(missing.rcode()) == passed_on[0]
    labels = {"server": "dns://127.0.0.1:0", "view": "", "zone": "."}
    responses = {(k[1], v) for k, v in found.items() if k[0] == "coredns_dns_responses_total"}
    assert responses == {
        (frozenset({**labels, "rcode": rcode, "plugin": by}.items()), 1.0)
        for rcode, by in (passed_on, ("NOERROR", "forward"))
    }


@pytest.mark.parametrize(
    ("failover", "expected"), [(True, dns.rcode.NOERROR), (False, dns.rcode.SERVFAIL)]
)
async def test_failover_rcode(failover: bool, expected: int) -> None:
    bad = Upstream(records=dict(RECORDS), host="127.0.0.2", mode="servfail")
    good = Upstream(records=dict(RECORDS), host="127.0.0.3")
    option = "\n failover SERVFAIL" if failover else ""
    body = "forward . {0} {1} {{\n policy sequential" + option + "\n}}"
    async with serving(body, bad, good) as server:
        r = await query(server, "a.example", "A")
    assert r.rcode() == expected
    assert bad.count("a.example.") == 1


# -- resolv.conf as TO ----------------------------------------------------------


async def test_resolv_conf_nameservers_on_port_53(tmp_path: Path) -> None:
    # Port 53 is fixed for resolv.conf nameservers: a loopback address of our own.
    host = f"127.53.{os.getpid() % 250 + 1}.{int(time.time() * 1000) % 250 + 1}"
    up = Upstream(records=dict(RECORDS), host=host, port=53)
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"search svc.cluster.local\nnameserver {host}\noptions ndots:5\n")
    async with up.running(), serve(corefile(f"forward . {resolv}")) as server:
        r = await query(server, "a.example", "A")
    assert answers(r) == ["192.0.2.1"]
    assert up.count("a.example.") == 1


async def test_a_resolv_conf_without_nameservers_beside_an_address_is_skipped(
    tmp_path: Path,
) -> None:
    # CoreDNS skips a resolv.conf with no nameserver line when other TOs remain.
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("search svc.cluster.local\noptions ndots:5\n")
    async with up.running(), serve(corefile(f"forward . {resolv} {up.address}")) as server:
        r = await query(server, "a.example", "A")
        (only,) = plugin(server).forwarders[0].proxies
    assert answers(r) == ["192.0.2.1"]
    assert only.label == up.address


# -- max_concurrent ---------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def burst(server: Server, count: int, first_id: int) -> dict[int, int]:
    """Send ``count`` queries at once over one UDP socket; rcode counts of the replies."""
    host, port = "127.0.0.1", server.port()
    rcodes: dict[int, int] = {}
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect((host, port))

        async def receive() -> None:
            with trio.move_on_after(3):
                while sum(rcodes.values()) < count:
                    data = await sock.recv(65535)
                    rcode = data[3] & 0xF
                    rcodes[rcode] = rcodes.get(rcode, 0) + 1

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            for i in range(count):
                q = make_query(f"n{i}.slow.example.", "A")
                q.id = (first_id + i) & 0xFFFF
                await sock.send(q.to_wire())
    return rcodes


async def test_max_concurrent_refuses_at_once_and_memory_stays_flat() -> None:
    slow = Upstream(records={}, host="127.0.0.2", delay=1.0)
    body = "forward . {0} {{\n max_concurrent 10\n}}"
    async with serving(body, slow) as server:
        start = time.perf_counter()
        first = await burst(server, 300, 0)
        assert first.get(dns.rcode.REFUSED, 0) >= 280, first
        assert first.get(dns.rcode.NXDOMAIN, 0) <= 10, first
        assert elapsed_since(start) < 3
        before = rss_bytes()
        for round_no in range(1, 4):
            rcodes = await burst(server, 300, round_no * 300)
            assert rcodes.get(dns.rcode.REFUSED, 0) >= 280, rcodes
        grown = rss_bytes() - before
        rejects = samples(server, "coredns_forward_max_concurrent_rejects_total")
        asked = sum(1 for name, _, _ in slow.queries if name.endswith(".slow.example."))
    assert grown < 4 * 1024 * 1024, grown
    assert rejects[()] >= 4 * 280
    assert asked <= 4 * 10


# -- Metrics ----------------------------------------------------------------------


async def test_metrics() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with up.running(), serve(corefile(f"forward . {up.address}")) as server:
        await query(server, "a.example", "A")
        await query(server, "missing.example", "A")
        requests = samples(server, "coredns_forward_requests_total")
        responses = samples(server, "coredns_forward_responses_total")
        durations = samples(server, "coredns_forward_request_duration_seconds_count")
        proxy = samples(server, "coredns_proxy_request_duration_seconds_count")
        families = {f.name for f in plugin(server).metrics()}
    to = up.address
    assert requests[(("to", to),)] == 2
    assert responses[(("rcode", "NOERROR"), ("to", to))] == 1
    assert responses[(("rcode", "NXDOMAIN"), ("to", to))] >= 1
    assert durations[(("rcode", "NOERROR"), ("to", to))] == 1
    assert proxy[(("proxy_name", "forward"), ("rcode", "NOERROR"), ("to", to))] == 1
    assert {
        "coredns_forward_healthcheck_failures",
        "coredns_forward_healthcheck_broken",
        "coredns_forward_max_concurrent_rejects",
        "coredns_proxy_conn_cache_hits",
        "coredns_forward_mismatched_replies",
    } <= families


async def test_one_report_for_several_blocks() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    text = (
        "example.org:0 {{\n bind 127.0.0.1\n forward . {0}\n}}\n"
        ".:0 {{\n bind 127.0.0.1\n forward . {0}\n}}\n"
    )
    async with up.running(), serve(text.format(up.address)) as server:
        assert server.config is not None
        reports = [list(p.metrics()) for p in server.config.find("forward")]
    assert len(reports) == 2
    assert sum(1 for r in reports if r) == 1  # shared counts, reported once


async def test_ipv6_upstream() -> None:
    up = Upstream(records=dict(RECORDS), host="::1")
    async with serving("forward . {0}", up) as server:
        r = await query(server, "a.example", "A")
        requests = samples(server, "coredns_forward_requests_total")
    assert answers(r) == ["192.0.2.1"]
    assert up.address.startswith("[::1]:")
    assert requests[(("to", up.address),)] >= 1


def test_counts_survive_a_reload() -> None:
    """A new configuration takes the running one's counts, as CoreDNS's are process-wide."""
    first = load_config(corefile("forward . 10.0.0.1"))
    (old,) = first.find("forward")
    assert isinstance(old, ForwardPlugin)
    old.stats.upstream("10.0.0.1:53").requests = 7
    runner = SimpleNamespace(server=SimpleNamespace(config=first))
    second = load_config(corefile("forward . 10.0.0.1"), shared={"runner": runner})
    (new,) = second.find("forward")
    assert isinstance(new, ForwardPlugin)
    assert new.stats is old.stats and new.owns_stats
    assert new.stats.upstream("10.0.0.1:53").requests == 7
