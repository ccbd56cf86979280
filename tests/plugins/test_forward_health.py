"""forward's health checks (down, up, all down) and loop detection, on the real server."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import pytest
import trio

from pycorefile import Server
from pycorefile.plugin import StartupError
from pycorefile.testing import Upstream, query, serve
from pycorefile_plugins.forward import ForwardPlugin, Proxy

RECORDS = {("a.example.", "A"): ["192.0.2.1"]}
FAST = "read_timeout 200ms\n health_check 100ms\n policy sequential"
"""Short timeouts so that an upstream goes down within a second."""


def corefile(body: str) -> str:
    return f".:0 {{\n bind 127.0.0.1\n {body}\n}}\n"


@asynccontextmanager
async def serving(template: str, *ups: Upstream) -> AsyncIterator[Server]:
    """Start the upstreams, then serve ``template`` with ``{0}``, ``{1}``... their addresses."""
    async with AsyncExitStack() as stack:
        for up in ups:
            await stack.enter_async_context(up.running())
        body = template.format(*(up.address for up in ups))
        async with serve(corefile(body)) as server:
            yield server


def proxies(server: Server) -> list[Proxy]:
    assert server.config is not None
    (plugin,) = server.config.find("forward")
    assert isinstance(plugin, ForwardPlugin)
    return plugin.forwarders[0].proxies


def forward_plugin(server: Server) -> ForwardPlugin:
    assert server.config is not None
    (plugin,) = server.config.find("forward")
    assert isinstance(plugin, ForwardPlugin)
    return plugin


def counter(server: Server, family: str) -> dict[tuple[tuple[str, str], ...], float]:
    out: dict[tuple[tuple[str, str], ...], float] = {}
    for fam in forward_plugin(server).metrics():
        for s in fam.samples:
            if s.name == family:
                out[tuple(sorted(s.labels.items()))] = s.value
    return out


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (bounded) until ``condition`` holds."""
    with trio.fail_after(timeout):
        while not condition():
            await trio.sleep(0.02)


def probes(up: Upstream) -> int:
    """Health checks received: ``. NS`` queries."""
    return up.count(".", "NS")


# -- Down and up ------------------------------------------------------------------


async def test_failed_upstream_goes_down_then_up_again() -> None:
    flaky = Upstream(records=dict(RECORDS), host="127.0.0.2", mode="silent")
    good = Upstream(records=dict(RECORDS), host="127.0.0.3")
    body = "forward . {0} {1} {{\n max_fails 2\n " + FAST + "\n}}"
    async with serving(body, flaky, good) as server:
        first, _ = proxies(server)
        assert probes(flaky) == 0  # no health checks while nothing failed
        r = await query(server, "a.example", "A")
        assert r.rcode() == dns.rcode.NOERROR  # the second upstream answered
        await until(lambda: first.down(2))
        assert probes(flaky) >= 2

        # Down: queries go straight to the healthy upstream, without a timeout.
        asked = flaky.count("a.example.")
        r = await query(server, "a.example", "A")
        assert r.rcode() == dns.rcode.NOERROR
        assert flaky.count("a.example.") == asked

        # It answers again: the next health check brings it back, and sequential uses it.
        flaky.mode = "answer"
        await until(lambda: not first.down(2))
        r = await query(server, "a.example", "A")
        assert r.rcode() == dns.rcode.NOERROR
        assert flaky.count("a.example.") == asked + 1
        failures = counter(server, "coredns_forward_healthcheck_failures_total")
    assert failures[(("to", flaky.address),)] >= 2


async def test_health_checks_ask_the_root_ns_with_recursion_by_default() -> None:
    seen: list[tuple[str, str, bool]] = []

    def record(q: dns.message.Message) -> dns.message.Message | None:
        question = q.question[0]
        seen.append((question.name.to_text(), dns.rdatatype.to_text(question.rdtype),
                     bool(q.flags & dns.flags.RD)))  # fmt: skip
        if question.name.to_text() == "a.example.":
            return None  # the query fails: a health check follows
        return dns.message.make_response(q)

    up = Upstream(host="127.0.0.2", handler=record)
    async with serving("forward . {0} {{\n " + FAST + "\n}}", up) as server:
        await query(server, "a.example", "A")
        await until(lambda: any(t == "NS" for _, t, _ in seen))
    assert (".", "NS", True) in seen


async def test_health_check_no_rec_and_domain() -> None:
    seen: list[tuple[str, str, bool]] = []

    def record(q: dns.message.Message) -> dns.message.Message | None:
        question = q.question[0]
        seen.append((question.name.to_text(), dns.rdatatype.to_text(question.rdtype),
                     bool(q.flags & dns.flags.RD)))  # fmt: skip
        if question.name.to_text() == "a.example.":
            return None
        return dns.message.make_response(q)

    up = Upstream(host="127.0.0.2", handler=record)
    body = "forward . {0} {{\n read_timeout 200ms\n health_check 100ms no_rec domain probe.test\n}}"
    async with serving(body, up) as server:
        await query(server, "a.example", "A")
        await until(lambda: any(t == "NS" for _, t, _ in seen))
    assert ("probe.test.", "NS", False) in seen


async def test_any_reply_is_healthy() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2", mode="servfail")
    async with serving("forward . {0} {{\n " + FAST + "\n}}", up) as server:
        r = await query(server, "a.example", "A")
        assert r.rcode() == dns.rcode.SERVFAIL  # the upstream's own answer
        (proxy,) = proxies(server)
    assert proxy.fails == 0
    assert probes(up) == 0  # an answer, even SERVFAIL, is not a failure


async def test_max_fails_zero_never_checks_nor_marks_down() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2", mode="silent")
    body = "forward . {0} {{\n max_fails 0\n " + FAST + "\n}}"
    async with serving(body, up) as server:
        for _ in range(2):
            r = await query(server, "a.example", "A")
            assert r.rcode() == dns.rcode.SERVFAIL
        await trio.sleep(0.3)  # three health-check intervals: none may come
        (proxy,) = proxies(server)
    assert probes(up) == 0
    assert not proxy.down(0)


# -- Every upstream down ---------------------------------------------------------------


async def test_all_down_tries_them_anyway() -> None:
    one = Upstream(records=dict(RECORDS), host="127.0.0.2", mode="silent")
    two = Upstream(records=dict(RECORDS), host="127.0.0.3", mode="silent")
    body = "forward . {0} {1} {{\n max_fails 1\n " + FAST + "\n}}"
    async with serving(body, one, two) as server:
        await query(server, "a.example", "A")
        await until(lambda: all(p.down(1) for p in proxies(server)))
        before = one.count("b.example.") + two.count("b.example.")
        r = await query(server, "b.example", "A")
        broken = counter(server, "coredns_forward_healthcheck_broken_total")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert one.count("b.example.") + two.count("b.example.") > before  # still asked
    assert broken[()] >= 1


async def test_all_down_with_failfast_is_servfail_at_once() -> None:
    one = Upstream(records=dict(RECORDS), host="127.0.0.2", mode="silent")
    two = Upstream(records=dict(RECORDS), host="127.0.0.3", mode="silent")
    body = (
        "forward . {0} {1} {{\n max_fails 1\n failfast_all_unhealthy_upstreams\n " + FAST + "\n}}"
    )
    async with serving(body, one, two) as server:
        await query(server, "a.example", "A")
        await until(lambda: all(p.down(1) for p in proxies(server)))
        start = time.perf_counter()
        r = await query(server, "b.example", "A")
        took = time.perf_counter() - start
        broken = counter(server, "coredns_forward_healthcheck_broken_total")
    assert r.rcode() == dns.rcode.SERVFAIL
    assert took < 0.19, took  # a try would have waited 0.2 s
    assert one.count("b.example.") + two.count("b.example.") == 0
    assert broken[()] >= 1


# -- Loops -------------------------------------------------------------------------------


class Relay:
    """A name server that passes every UDP query on to ``target`` and relays the reply.

    With our own server as the target it is the classic loop: an upstream
    (a node-local resolver, say) whose own upstream is us.
    """

    def __init__(self, host: str) -> None:
        self.host = host
        self.port = 0
        self.target: tuple[str, int] = ("127.0.0.1", 0)
        self.target_set = trio.Event()
        self.relayed = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Relay]:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.bind((self.host, 0))
            self.port = sock.getsockname()[1]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._serve, sock, nursery)
                try:
                    yield self
                finally:
                    nursery.cancel_scope.cancel()

    async def _serve(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            data, addr = await sock.recvfrom(65535)
            nursery.start_soon(self._relay, sock, data, addr)

    async def _relay(
        self, sock: trio.socket.SocketType, data: bytes, addr: tuple[str, int]
    ) -> None:
        await self.target_set.wait()
        self.relayed += 1
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
            await out.connect(self.target)
            await out.send(data)
            with trio.move_on_after(3):
                reply = await out.recv(65535)
                await sock.sendto(reply, addr)


async def test_a_forwarding_loop_is_detected_and_stops_the_server(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="pycorefile")
    relay = Relay("127.0.0.5")
    with pytest.RaisesGroup(
        pytest.RaisesExc(StartupError, match=r'Loop \(.*\) detected for zone "\."'),
        flatten_subgroups=True,
    ):
        async with relay.running(), serve(corefile(f"forward . {relay.address}")) as server:
            relay.target = ("127.0.0.1", server.port())
            relay.target_set.set()
            with trio.fail_after(5):
                await trio.sleep_forever()  # ended by the server stopping on the loop
    logged = [r.getMessage() for r in caplog.records if "Loop" in r.getMessage()]
    assert logged and 'Query: "HINFO ' in logged[0]
    assert f"through upstream {relay.address}" in logged[0]
    assert relay.relayed <= 4  # the probe went round twice, then the loop was cut


async def test_no_loop_with_a_normal_upstream() -> None:
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with serving("forward . {0}\n forward example.org {0}", up) as server:
        r = await query(server, "a.example", "A")
        plugin = forward_plugin(server)
        assert plugin.ready()
        assert plugin.loop_error is None
    assert r.rcode() == dns.rcode.NOERROR
    hinfo = [name for name, t, _ in up.queries if t == "HINFO"]
    assert len(hinfo) == 2  # one probe per directive and upstream, sent at start
    assert any(name.endswith(".example.org.") for name in hinfo)


def hinfo_names(up: Upstream) -> list[str]:
    """The loop probes an upstream received."""
    return [name for name, t, _ in up.queries if t == "HINFO"]


async def replay(server: Server, name: str, times: int = 4) -> list[int]:
    """Ask for the probe name again, as an attacker who saw it would."""
    return [(await query(server, name, "HINFO")).rcode() for _ in range(times)]


async def test_a_probe_replayed_after_its_reply_does_not_stop_the_server() -> None:
    # CoreDNS's loop plugin disarms once its probe is answered: a name seen
    # in an upstream's logs is no kill switch.
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with serving("forward . {0}", up) as server:
        plugin = forward_plugin(server)
        await until(lambda: not plugin.loops.armed)
        [name] = hinfo_names(up)
        rcodes = await replay(server, name)
        await trio.sleep(0.2)  # a stop would come from the plugin's task
        r = await query(server, "a.example", "A")
        assert plugin.loop_error is None and plugin.ready()
    assert rcodes == [dns.rcode.NXDOMAIN] * 4  # forwarded like any other name
    assert hinfo_names(up).count(name) == 5
    assert r.rcode() == dns.rcode.NOERROR


async def test_an_unanswered_probe_is_sent_again_then_disarmed_after_the_window(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # CoreDNS tries its probe every second for 30 s (here: 1.5 s), then
    # disarms it: replaying the name later does not stop the server either.
    monkeypatch.setattr("pycorefile_plugins.forward._loop.WINDOW", 1.5)
    monkeypatch.setattr("pycorefile_plugins.forward._loop.RETRY", 0.2)
    silent = Upstream(host="127.0.0.2", mode="silent")
    good = Upstream(records=dict(RECORDS), host="127.0.0.3")
    body = "forward . {0} {{\n read_timeout 200ms\n max_fails 0\n}}\n forward example {1}"
    async with serving(body, silent, good) as server:
        plugin = forward_plugin(server)
        [name] = hinfo_names(silent)[:1]
        assert name in plugin.loops.armed
        await until(lambda: not plugin.loops.armed)
        sent = hinfo_names(silent).count(name)
        rcodes = await replay(server, name)  # goes to the silent upstream: SERVFAIL
        await trio.sleep(0.2)
        r = await query(server, "a.example", "A")
        assert plugin.loop_error is None and plugin.ready()
    assert 3 <= sent <= 8, sent  # sent again after each unanswered try, within 1.5 s
    assert rcodes == [dns.rcode.SERVFAIL] * 4
    assert r.rcode() == dns.rcode.NOERROR
