"""The serving core over real UDP and TCP sockets on loopback."""

from __future__ import annotations

import os
import random
import struct
from collections.abc import AsyncIterator, Sequence

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trio

from pycorefile import (
    Directive,
    Plugin,
    Request,
    Server,
    SetupContext,
    load_config,
    open_server,
)
from pycorefile._server import ServerOptions
from pycorefile._tcp import TcpLimits
from pycorefile.testing import make_query, query, query_wire, scrape, serve

from .fixtures import registry

COREFILE = """\
example.org:0 {
    bind 127.0.0.1
    whoami
}
big.test:0 {
    bind 127.0.0.1
    bigtxt
}
slow.test:0 {
    bind 127.0.0.1
    slow
}
fail.test:0 {
    bind 127.0.0.1
    failing
}
"""


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    async with open_server(COREFILE, registry=registry()) as srv:
        yield srv


ROUTING = [
    # (name, expected rcode, expected answering block marker)
    ("example.org.", dns.rcode.NOERROR),
    ("www.EXAMPLE.org.", dns.rcode.NOERROR),
    ("example.com.", dns.rcode.REFUSED),
    ("org.", dns.rcode.REFUSED),
    ("fail.test.", dns.rcode.SERVFAIL),
]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize(("name", "rcode"), ROUTING)
async def test_routing_by_longest_zone(server, proto: str, name: str, rcode: int) -> None:  # type: ignore[no-untyped-def]
    reply = await query(server, name, "A", proto=proto)
    assert reply.rcode() == rcode
    assert reply.question[0].name.to_text() == name  # echoed exactly, case included
    if rcode == dns.rcode.NOERROR:
        assert reply.additional[0].name.to_text() == name
        assert reply.additional[0][0].address == "127.0.0.1"


async def test_id_and_question_case_echoed(server) -> None:  # type: ignore[no-untyped-def]
    q = make_query("WwW.ExAmPlE.oRg", "A")
    q.id = 4242
    wire = await query_wire(server, q.to_wire())
    assert wire is not None
    reply = dns.message.from_wire(wire)
    assert reply.id == 4242
    assert reply.question[0].name.to_text() == "WwW.ExAmPlE.oRg."


async def test_short_packets_are_dropped_and_server_keeps_answering(server) -> None:  # type: ignore[no-untyped-def]
    for junk in (b"", b"\x01", b"\x00" * 11):
        assert await query_wire(server, junk, timeout=0.3) is None
    reply = await query(server, "example.org", "A")
    assert reply.rcode() == dns.rcode.NOERROR


async def test_undecodable_question_gets_formerr(server) -> None:  # type: ignore[no-untyped-def]
    # QDCOUNT 1, but the name runs off the end of the packet.
    wire = struct.pack(">HHHHHH", 77, 0x0100, 1, 0, 0, 0) + b"\x07exam"
    reply = await query_wire(server, wire)
    assert reply is not None
    assert struct.unpack(">H", reply[:2])[0] == 77
    assert reply[3] & 0xF == dns.rcode.FORMERR
    assert reply[2] & 0x80  # QR


async def test_no_question_gets_formerr(server) -> None:  # type: ignore[no-untyped-def]
    wire = struct.pack(">HHHHHH", 78, 0x0100, 0, 0, 0, 0)
    reply = await query_wire(server, wire)
    assert reply is not None
    assert reply[3] & 0xF == dns.rcode.FORMERR


async def test_responses_sent_to_us_are_never_answered(server) -> None:  # type: ignore[no-untyped-def]
    q = make_query("example.org", "A")
    q.flags |= dns.flags.QR
    assert await query_wire(server, q.to_wire(), timeout=0.3) is None


async def test_random_garbage_never_stops_the_server(server) -> None:  # type: ignore[no-untyped-def]
    rng = random.Random(1234)
    for _ in range(300):
        size = rng.randrange(0, 200)
        packet = bytes(rng.randrange(256) for _ in range(size))
        await query_wire(server, packet, timeout=0.01)
    for proto in ("udp", "tcp"):
        reply = await query(server, "example.org", "A", proto=proto)
        assert reply.rcode() == dns.rcode.NOERROR


async def test_other_opcodes_get_notimp(server) -> None:  # type: ignore[no-untyped-def]
    q = make_query("example.org", "A")
    q.set_opcode(dns.opcode.NOTIFY)
    reply = dns.message.from_wire(await query_wire(server, q.to_wire()))  # type: ignore[arg-type]
    assert reply.rcode() == dns.rcode.NOTIMP
    assert reply.opcode() == dns.opcode.NOTIFY


async def test_edns_version_above_zero_gets_badvers(server) -> None:  # type: ignore[no-untyped-def]
    q = make_query("example.org", "A", edns=1)
    reply = dns.message.from_wire(await query_wire(server, q.to_wire()))  # type: ignore[arg-type]
    assert reply.rcode() == dns.rcode.BADVERS
    assert reply.edns == 0


async def test_other_classes_are_refused(server) -> None:  # type: ignore[no-untyped-def]
    q = dns.message.make_query("example.org", "TXT", rdclass="CH")
    reply = await query(server, q)
    assert reply.rcode() == dns.rcode.REFUSED


async def test_local_replies_advertise_1232_and_mirror_do(server) -> None:  # type: ignore[no-untyped-def]
    reply = await query(server, "example.org", "A", edns=True, payload=4096, do=True)
    assert reply.edns == 0
    assert reply.payload == 1232
    assert reply.ednsflags & dns.flags.DO
    plain = await query(server, "example.org", "A")
    assert plain.edns == -1


TRUNCATION = [
    # (strings of 200 bytes, edns payload or None, proto, expect TC)
    (1, None, "udp", False),
    (3, None, "udp", True),  # > 512 without EDNS
    (3, 1232, "udp", False),
    (8, 1232, "udp", True),  # > 1232
    (8, 4096, "udp", True),  # the server caps at 1232 whatever the client offers
    (8, None, "tcp", False),
    (200, None, "tcp", False),  # ~40 KB over TCP is fine
]


@pytest.mark.parametrize(("count", "payload", "proto", "truncated"), TRUNCATION)
async def test_udp_replies_are_sized_for_the_client(
    server: Server,
    count: int,
    payload: int | None,
    proto: str,
    truncated: bool,
) -> None:
    q = make_query(f"n{count}.big.test", "TXT", edns=payload is not None, payload=payload or 0)
    reply = await query(server, q, proto=proto)
    assert bool(reply.flags & dns.flags.TC) == truncated
    limit = 65535 if proto == "tcp" else (min(payload, 1232) if payload else 512)
    assert len(reply.to_wire()) <= limit
    if payload is not None:
        assert reply.edns == 0  # the OPT record survives truncation
    if not truncated:
        assert sum(len(rrset) for rrset in reply.answer) == count


async def test_truncated_udp_then_full_answer_over_tcp(server) -> None:  # type: ignore[no-untyped-def]
    udp = await query(server, "n10.big.test", "TXT")
    assert udp.flags & dns.flags.TC
    tcp = await query(server, "n10.big.test", "TXT", proto="tcp")
    assert not tcp.flags & dns.flags.TC
    assert len(tcp.answer[0]) == 10


async def test_plugin_exception_gives_servfail_and_is_logged(server, caplog) -> None:  # type: ignore[no-untyped-def]
    reply = await query(server, "x.fail.test", "A")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert any(
        "plugin/failing" in r.getMessage() and "boom" in r.getMessage() for r in caplog.records
    )
    assert (await query(server, "example.org", "A")).rcode() == dns.rcode.NOERROR


async def test_tcp_pipelined_queries_answered_out_of_order(server) -> None:  # type: ignore[no-untyped-def]
    host, port = "127.0.0.1", server.port()
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        names = ["ms400.slow.test", "ms10.slow.test", "example.org"]
        ids: dict[int, str] = {}
        payload = b""
        for i, name in enumerate(names):
            q = make_query(name, "A")
            q.id = 1000 + i
            ids[q.id] = name
            wire = q.to_wire()
            payload += struct.pack(">H", len(wire)) + wire
        await stream.send_all(payload)
        order: list[str] = []
        buf = b""
        with trio.fail_after(5):
            while len(order) < 3:
                buf += await stream.receive_some(65535)
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack(">H", buf[:2])[0]:
                    size = struct.unpack(">H", buf[:2])[0]
                    msg = dns.message.from_wire(buf[2 : 2 + size])
                    buf = buf[2 + size :]
                    order.append(ids[msg.id])
                    assert msg.question[0].name.to_text().rstrip(".") == ids[msg.id]
    assert order[-1] == "ms400.slow.test"  # the slow one finished last
    assert set(order) == set(names)


async def test_tcp_idle_connections_are_closed() -> None:
    options = ServerOptions(tcp=TcpLimits(read=0.3, idle=0.3))
    async with open_server(COREFILE, registry=registry(), options=options) as srv:
        silent = await trio.open_tcp_stream("127.0.0.1", srv.port())
        async with silent:  # no first query within the read timeout
            with trio.fail_after(3):
                assert await silent.receive_some(10) == b""
        stream = await trio.open_tcp_stream("127.0.0.1", srv.port())
        async with stream:  # one query answered, then idle
            wire = make_query("example.org", "A").to_wire()
            await stream.send_all(struct.pack(">H", len(wire)) + wire)
            reply = b""
            with trio.fail_after(3):
                while len(reply) < 2 or len(reply) < 2 + struct.unpack(">H", reply[:2])[0]:
                    chunk = await stream.receive_some(65535)
                    assert chunk
                    reply += chunk
                assert await stream.receive_some(10) == b""


async def test_tcp_connection_cap() -> None:
    options = ServerOptions(max_connections=3, max_http_connections=1)  # 2 for DNS
    async with open_server(COREFILE, registry=registry(), options=options) as srv:
        keep = [await trio.open_tcp_stream("127.0.0.1", srv.port()) for _ in range(2)]
        await trio.sleep(0.1)
        extra = await trio.open_tcp_stream("127.0.0.1", srv.port())
        with trio.fail_after(3):
            assert await extra.receive_some(10) == b""
        await extra.aclose()
        for s in keep:
            await s.aclose()


async def test_queries_beyond_in_flight_cap_are_refused() -> None:
    options = ServerOptions(max_in_flight=3)
    async with open_server(COREFILE, registry=registry(), options=options) as srv:
        results: list[int] = []

        async def ask(i: int) -> None:
            reply = await query(srv, "ms500.slow.test", "A", timeout=5)
            results.append(reply.rcode())

        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(ask, i)
        assert results.count(dns.rcode.NOERROR) == 3
        assert results.count(dns.rcode.REFUSED) == 3


async def test_slow_query_past_deadline_gets_servfail() -> None:
    options = ServerOptions(query_deadline=0.2)
    async with open_server(COREFILE, registry=registry(), options=options) as srv:
        reply = await query(srv, "ms2000.slow.test", "A", timeout=3)
        assert reply.rcode() == dns.rcode.SERVFAIL


async def test_ipv6_loopback_listener() -> None:
    if not os.path.exists("/proc/net/if_inet6"):
        pytest.fail("this machine has no IPv6; the test needs ::1")
    corefile = ".:0 {\n    bind ::1\n    whoami\n}\n"
    async with open_server(corefile, registry=registry()) as srv:
        reply = await query(("::1", srv.port()), "example.org", "AAAA")
        assert reply.additional[0][0].address == "::1"


async def test_a_listener_removed_by_a_reload_stops_answering() -> None:
    two = ".:0 {\n    bind 127.0.0.1\n    whoami\n}\n.:0 {\n    bind 127.0.0.2\n    whoami\n}\n"
    one = ".:0 {\n    bind 127.0.0.1\n    whoami\n}\n"
    async with open_server(two, registry=registry()) as srv:
        kept = ("127.0.0.1", srv.port(("dns", "127.0.0.1", 0)))
        removed = ("127.0.0.2", srv.port(("dns", "127.0.0.2", 0)))
        assert (await query(removed, "example.org", "A")).rcode() == dns.rcode.NOERROR
        await srv.reload(load_config(one, registry=registry()))
        assert (await query(kept, "example.org", "A")).rcode() == dns.rcode.NOERROR
        assert not await answers(removed)
        with pytest.raises(OSError):
            await trio.open_tcp_stream(*removed)
        assert [key for key in srv.listeners] == [("dns", "127.0.0.1", 0)]
        with trio.fail_after(5):
            while any(host == "127.0.0.2" for _proto, host, _port in srv.addresses):
                await trio.sleep(0.05)


async def answers(address: tuple[str, int]) -> bool:
    """True when a UDP query to ``address`` gets a reply within a second."""
    try:
        return await query_wire(address, make_query("example.org").to_wire(), timeout=1) is not None
    except ConnectionRefusedError:
        return False  # the port is closed (ICMP port unreachable)


class RaisingObserver:
    """A reply observer (as a metrics plugin registers) that raises on every reply."""

    def observe(self, request: Request, wire: bytes) -> None:
        raise RuntimeError("observer bug")

    def observe_known(self, *args: object) -> None:
        raise RuntimeError("observer bug on the fast path")


class BadMetrics(Plugin):
    """Registers ``RaisingObserver`` at setup; serves no queries itself."""

    serves_queries = False

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> BadMetrics:
        ctx.shared["reply_observers"].append(RaisingObserver())
        return cls()


async def test_a_raising_reply_observer_is_contained_logged_once_and_counted_as_a_panic(
    caplog: pytest.LogCaptureFixture,
) -> None:
    corefile = (
        ".:0 {\n    bind 127.0.0.1\n    prometheus 127.0.0.1:0\n    badmetrics\n"
        "    cache\n    whoami\n}\n"
    )
    async with serve(corefile, plugins={"badmetrics": BadMetrics}) as srv:
        for proto in ("udp", "udp", "tcp", "udp"):  # the second and later: cache hits
            reply = await query(srv, "example.org", "A", proto=proto)
            assert reply.rcode() == dns.rcode.NOERROR
        metrics = await scrape(srv)
    assert metrics.value("coredns_panics_total") == 4
    assert metrics.value("coredns_cache_hits_total") == 3  # the fast path was taken
    failures = [r for r in caplog.records if "reply observer" in r.getMessage()]
    assert len(failures) == 1
