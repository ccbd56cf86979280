"""forward's health checks (down, up, all down), on the real server."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import trio

from pycorefile import Server
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


# -- No loop probe of its own -------------------------------------------------------------


async def test_forward_sends_no_loop_probe_without_the_loop_plugin() -> None:
    # As CoreDNS's forward: probing for loops is the loop plugin's work.
    up = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with serving("forward . {0}\n forward example.org {0}", up) as server:
        r = await query(server, "a.example", "A")
        await trio.sleep(0.3)  # a probe would be sent at start
    assert r.rcode() == dns.rcode.NOERROR
    assert [name for name, t, _ in up.queries if t == "HINFO"] == []
