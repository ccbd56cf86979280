"""forward's failures as CoreDNS reports them: errors, consolidate, metrics, and the cache.

When no upstream answers, CoreDNS's forward returns ``dns.RcodeServerFailure,
err``: the *errors* plugin logs ``2 NAME TYPE: err``, the server answers
SERVFAIL, the *cache* never sees it (the next query tries the upstreams
again), and the response metric has ``plugin=""`` (no plugin wrote it).
Upstreams are real servers on 127.0.0.x.
"""

from __future__ import annotations

import logging
import re
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest
import trio

from pycorefile import Server
from pycorefile.testing import Upstream, query, serve
from tests.logcapture import collect_logs

from .test_prometheus import scrape, value

SERVER = "dns://127.0.0.1:0"


@pytest.fixture
def records() -> Iterator[list[logging.LogRecord]]:
    """What the server logs at INFO and above."""
    with collect_logs(logging.INFO) as collected:
        yield collected


def errors_lines(records: list[logging.LogRecord], level: int = logging.ERROR) -> list[str]:
    return [
        r.getMessage()
        for r in records
        if r.getMessage().startswith("plugin/errors:") and r.levelno == level
    ]


def panics(records: list[logging.LogRecord]) -> list[str]:
    """Lines the server logs for a plugin's unexpected exception (a panic)."""
    return [r.getMessage() for r in records if r.getMessage().startswith("plugin/forward: ")]


def closed_port(host: str) -> int:
    """A port on ``host`` where nothing listens (UDP and TCP refuse)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class Switch:
    """An upstream handler that is silent while ``down``, and answers A records when up."""

    def __init__(self) -> None:
        self.down = True

    def __call__(self, q: dns.message.Message) -> dns.message.Message | None:
        if self.down:
            return None
        r = dns.message.make_response(q)
        r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.1"))
        return r


@asynccontextmanager
async def serving(body: str, *ups: Upstream) -> AsyncIterator[Server]:
    """A server for one block (``{0}``... the upstreams' addresses) with the upstreams up."""
    async with trio.open_nursery() as nursery:
        for up in ups:
            await nursery.start(_run_upstream, up)
        text = f".:0 {{\n bind 127.0.0.1\n {body.format(*(u.address for u in ups))}\n}}\n"
        async with serve(text) as server:
            yield server
        nursery.cancel_scope.cancel()


async def _run_upstream(up: Upstream, task_status: trio.TaskStatus[None]) -> None:
    async with up.running():
        task_status.started()
        await trio.sleep_forever()


# -- errors sees forward's failures ------------------------------------------------


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_errors_logs_an_upstream_timeout_as_coredns_does(
    proto: str, records: list[logging.LogRecord]
) -> None:
    silent = Upstream(host="127.0.0.2", handler=Switch())
    body = "errors\n forward . {0} {{\n read_timeout 200ms\n max_fails 0\n }}"
    async with serving(body, silent) as server:
        reply = await query(server, "Down.Example.", "A", proto=proto)
    assert reply.rcode() == dns.rcode.SERVFAIL
    [line] = errors_lines(records)
    # CoreDNS: "[ERROR] plugin/errors: 2 down.example. A: read udp
    # 127.0.0.1:40396->127.0.0.2:53: i/o timeout" (Go's net error text).
    up = re.escape(silent.address)
    if proto == "udp":
        pattern = (
            rf"plugin/errors: 2 down\.example\. A: read udp 127\.0\.0\.1:\d+->{up}: i/o timeout"
        )
    else:
        pattern = rf"plugin/errors: 2 down\.example\. A: read tcp {up}: i/o timeout"
    assert re.fullmatch(pattern, line), line
    assert panics(records) == []  # an upstream failure is not a plugin's bug


async def test_errors_logs_refusing_upstreams(records: list[logging.LogRecord]) -> None:
    udp, tcp = closed_port("127.0.0.2"), closed_port("127.0.0.3")
    body = (
        f"errors\n forward a.example 127.0.0.2:{udp}\n"
        f" forward b.example 127.0.0.3:{tcp} {{{{\n force_tcp\n }}}}"
    )
    async with serving(body) as server:
        a = await query(server, "a.example.", "A")
        b = await query(server, "b.example.", "AAAA")
    assert a.rcode() == b.rcode() == dns.rcode.SERVFAIL
    first, second = errors_lines(records)
    assert re.fullmatch(
        rf"plugin/errors: 2 a\.example\. A: (read|write) udp 127\.0\.0\.1:\d+->127\.0\.0\.2:{udp}:"
        r" (read|write): connection refused",
        first,
    ), first
    assert second == (
        f"plugin/errors: 2 b.example. AAAA: dial tcp 127.0.0.3:{tcp}: connect: connection refused"
    )


async def test_consolidate_summarises_an_upstream_outage(records: list[logging.LogRecord]) -> None:
    # The pattern of CoreDNS's own errors README matches our error text.
    silent = Upstream(host="127.0.0.2", handler=Switch())
    body = (
        'errors {{\n consolidate 1s ".* i/o timeout$" warning\n }}\n'
        " forward . {0} {{\n read_timeout 100ms\n max_fails 0\n }}"
    )
    async with serving(body, silent) as server:
        rcodes: list[int] = []

        async def ask(i: int) -> None:
            rcodes.append((await query(server, f"n{i}.example.", "A")).rcode())

        async with trio.open_nursery() as nursery:
            for i in range(4):
                nursery.start_soon(ask, i)
        with trio.fail_after(5):
            while not errors_lines(records, logging.WARNING):
                await trio.sleep(0.05)
    assert rcodes == [dns.rcode.SERVFAIL] * 4
    assert errors_lines(records, logging.WARNING) == [
        "plugin/errors: 4 errors like '.* i/o timeout$' occurred in last 1s"
    ]
    assert errors_lines(records) == []


async def test_no_healthy_proxies_is_coredns_error_with_failfast(
    records: list[logging.LogRecord],
) -> None:
    silent = Upstream(host="127.0.0.2", handler=Switch())
    body = (
        "errors\n forward . {0} {{\n max_fails 1\n failfast_all_unhealthy_upstreams\n"
        " read_timeout 100ms\n health_check 50ms\n }}"
    )
    async with serving(body, silent) as server:
        await query(server, "first.example.", "A")
        assert server.config is not None
        (plugin,) = server.config.find("forward")
        proxy = plugin.forwarders[0].proxies[0]  # type: ignore[attr-defined]
        with trio.fail_after(5):
            while not proxy.down(1):
                await trio.sleep(0.02)
        reply = await query(server, "second.example.", "A")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert errors_lines(records)[-1] == "plugin/errors: 2 second.example. A: no healthy proxies"


async def test_max_concurrent_is_refused_with_coredns_error(
    records: list[logging.LogRecord],
) -> None:
    slow = Upstream(host="127.0.0.2", records={("slow.example.", "A"): ["192.0.2.1"]}, delay=0.5)
    body = "errors\n forward . {0} {{\n max_concurrent 1\n }}"
    async with serving(body, slow) as server:
        replies: list[dns.message.Message] = []

        async def ask(name: str) -> None:
            replies.append(await query(server, name, "A"))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "slow.example.")
            await trio.sleep(0.1)
            nursery.start_soon(ask, "other.example.")
    rcodes = sorted(r.rcode() for r in replies)
    assert rcodes == [dns.rcode.NOERROR, dns.rcode.REFUSED]
    # CoreDNS: return dns.RcodeRefused, "concurrent queries exceeded maximum 1"
    assert errors_lines(records) == [
        "plugin/errors: 5 other.example. A: concurrent queries exceeded maximum 1"
    ]


async def test_failure_metrics_match_coredns() -> None:
    silent = Upstream(host="127.0.0.2", handler=Switch())
    body = (
        "prometheus 127.0.0.1:0\n errors\n forward . {0} {{\n read_timeout 100ms\n max_fails 0\n }}"
    )
    async with serving(body, silent) as server:
        reply = await query(server, "down.example.", "A")
        found, _ = await scrape(server)
    assert reply.rcode() == dns.rcode.SERVFAIL
    to = silent.address
    labels = {"server": SERVER, "view": "", "zone": "."}
    # No plugin wrote the reply: CoreDNS's plugin label is empty.
    assert value(found, "coredns_dns_responses_total", rcode="SERVFAIL", plugin="", **labels) == 1
    assert not [
        k for k in found if k[0] == "coredns_dns_responses_total" and ("plugin", "forward") in k[1]
    ]
    assert value(found, "coredns_panics_total") == 0
    assert value(found, "coredns_forward_requests_total", to=to) == 2  # two tries
    assert value(found, "coredns_forward_upstream_failures_total", to=to, reason="timeout") == 2
    # Durations and responses are only counted for replies (CoreDNS's Connect).
    assert not [
        k
        for k in found
        if k[0].startswith(("coredns_forward_responses", "coredns_proxy_request_duration"))
        and ("rcode", "SERVFAIL") in k[1]
    ]


# -- The cache never keeps forward's own SERVFAIL ---------------------------------------


async def test_cache_does_not_keep_servfail_when_no_upstream_answered() -> None:
    # CoreDNS: the error path never reaches the cache, so the query after the
    # upstream recovered is answered, not served a cached SERVFAIL (servfail 5s).
    switch = Switch()
    up = Upstream(host="127.0.0.2", handler=switch)
    body = "cache\n forward . {0} {{\n read_timeout 200ms\n max_fails 0\n }}"
    async with serving(body, up) as server:
        down = await query(server, "flappy.example.", "A")
        switch.down = False
        recovered = await query(server, "flappy.example.", "A")
        again = await query(server, "flappy.example.", "A")
    assert down.rcode() == dns.rcode.SERVFAIL
    assert recovered.rcode() == dns.rcode.NOERROR
    assert [rd.to_text() for rd in recovered.answer[0]] == ["192.0.2.1"]
    assert again.answer == recovered.answer
    assert up.count("flappy.example.", "A") == 3  # two tries, then the answer (then cached)


@pytest.mark.parametrize(("cache", "asked"), [("cache", 1), ("cache {{\n servfail 0\n }}", 2)])
async def test_cache_keeps_an_upstream_servfail_per_servfail(cache: str, asked: int) -> None:
    up = Upstream(host="127.0.0.2", mode="servfail")
    async with serving(cache + "\n forward . {0}", up) as server:
        replies = [await query(server, "broken.example.", "A") for _ in range(2)]
    assert [r.rcode() for r in replies] == [dns.rcode.SERVFAIL] * 2
    assert up.count("broken.example.", "A") == asked
