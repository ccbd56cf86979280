"""reload: parsing, and the real command reloading a changed Corefile (kept short: 2s checks)."""

from __future__ import annotations

import errno
import http.client
import os
import signal
import time
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.message
import dns.query
import dns.rcode
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from pycorefile import CorefileError, load_config
from pycorefile._registry import Registry
from pycorefile.corefile import parse_corefile
from pycorefile.testing import make_query
from pycorefile_plugins.reload import ReloadConfig, ReloadPlugin, blocks_digest, parse_reload

from ..process import ServerProcess, free_port

# -- Parsing ----------------------------------------------------------------------------


def parse(text: str) -> ReloadConfig:
    return parse_reload(parse_corefile(".:53 {\n" + text + "\n}\n")[0].directives)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("reload", ReloadConfig(30.0, 15.0)),
        ("reload 10s", ReloadConfig(10.0, 5.0)),  # jitter cut to half the interval
        ("reload 2s 1s", ReloadConfig(2.0, 1.0)),
        ("reload 1m 10s", ReloadConfig(60.0, 10.0)),
        ("reload 30s 0", ReloadConfig(30.0, 0.0)),
    ],
)
def test_parse(text: str, expected: ReloadConfig) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("reload 1s", "interval value must be greater or equal to 2s"),
        ("reload 5s 500ms", "jitter value must be greater or equal to 1s"),
        ("reload soon", "invalid duration 'soon'"),
        ("reload 5s 1s 1s", "Wrong argument count"),
        ("reload {\n  every 5s\n}", "unknown property 'every'"),
    ],
)
def test_setup_errors(text: str, message: str) -> None:
    registry = Registry.from_classes({"reload": ReloadPlugin})
    with pytest.raises(CorefileError, match=message) as info:
        load_config(".:53 {\n" + text + "\n}\n", registry=registry)
    assert "plugin/reload" in str(info.value)


def test_digest_ignores_comments_and_layout() -> None:
    first = ".:53 {\n    whoami\n    log\n}\n"
    same = "# a comment\n.:53   {\n\n    whoami   # answers\n    log\n}\n"
    other = ".:53 {\n    whoami\n}\n"
    assert blocks_digest(parse_corefile(first)) == blocks_digest(parse_corefile(same))
    assert blocks_digest(parse_corefile(first)) != blocks_digest(parse_corefile(other))


# -- The real command -------------------------------------------------------------------


def write(path: Path, text: str) -> None:
    """Replace the file in one step, so the watcher never reads half of it."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def ask(port: int, name: str, rdtype: str = "A") -> dns.message.Message:
    return dns.query.udp(make_query(name, rdtype), "127.0.0.1", port=port, timeout=3)


def metric(port: int, name: str) -> float:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/metrics")
        body = conn.getresponse().read().decode()
    finally:
        conn.close()
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            if sample.name == name:
                return float(sample.value)
    raise AssertionError(f"{name} not exported")


def wait_lines(srv: ServerProcess, text: str, count: int, timeout: float = 15) -> list[str]:
    """Wait until ``count`` output lines contain ``text``."""
    deadline = time.monotonic() + timeout
    while True:
        found = [line for line in srv.drain(settle=0.05) if text in line]
        if len(found) >= count:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"{count} x {text!r} not seen; output:\n" + "\n".join(srv.lines))


def corefile(dns_port: int, metrics_port: int, zone: str, extra: str = "") -> str:
    return (
        f"{zone}:{dns_port} {{\n"
        "    bind 127.0.0.1\n"
        "    reload 2s 1s\n"
        f"    prometheus 127.0.0.1:{metrics_port}\n"
        f"{extra}"
        "    whoami\n"
        "}\n"
    )


def test_changed_corefile_is_reloaded_and_a_broken_one_is_not(tmp_path: Path) -> None:
    dns_port, metrics_port = free_port(), free_port()
    path = tmp_path / "Corefile"
    write(path, corefile(dns_port, metrics_port, "a.test"))
    with ServerProcess(["-conf", str(path)]) as srv:
        srv.wait_for("plugin/reload: Running configuration SHA512 = ")
        assert ask(dns_port, "a.test.").rcode() == dns.rcode.NOERROR
        assert ask(dns_port, "b.test.").rcode() == dns.rcode.REFUSED

        write(path, corefile(dns_port, metrics_port, "b.test"))
        wait_lines(srv, "Reloading complete", 1)
        assert ask(dns_port, "b.test.").rcode() == dns.rcode.NOERROR
        assert ask(dns_port, "a.test.").rcode() == dns.rcode.REFUSED
        assert len(wait_lines(srv, "Running configuration SHA512", 2)) == 2
        assert metric(metrics_port, "coredns_reload_failed_total") == 0

        write(path, corefile(dns_port, metrics_port, "c.test", "    nosuchplugin\n"))
        line = wait_lines(srv, "[ERROR] plugin/reload: Corefile changed but reload failed", 1)[0]
        assert "Unknown directive 'nosuchplugin'" in line
        # The old configuration still serves, and the failure is counted once.
        assert ask(dns_port, "b.test.").rcode() == dns.rcode.NOERROR
        assert ask(dns_port, "c.test.").rcode() == dns.rcode.REFUSED
        assert metric(metrics_port, "coredns_reload_failed_total") == 1

        write(path, f"c.test:{dns_port} {{\n    whoami\n")  # unclosed block
        wait_lines(srv, "Corefile changed but reload failed", 2)
        assert metric(metrics_port, "coredns_reload_failed_total") == 2

        write(path, corefile(dns_port, metrics_port, "c.test"))
        wait_lines(srv, "Reloading complete", 2)
        assert ask(dns_port, "c.test.").rcode() == dns.rcode.NOERROR
        # Counters survive a reload, as CoreDNS's process-wide ones do.
        assert metric(metrics_port, "coredns_reload_failed_total") == 2
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


async def test_reloads_under_query_load_lose_no_query(tmp_path: Path) -> None:
    # A reload keeps the listening sockets and swaps only what answers, between two
    # batches of datagrams: no query is lost. Each reply is waited for generously: under
    # load a reply may come late (the build in a thread competes with the loop for the
    # CPU), and late is not lost. (Nothing blocking on the event loop is the static
    # check's subject, in tests/test_event_loop.py.)
    dns_port, metrics_port = free_port(), free_port()
    path = tmp_path / "Corefile"
    write(path, corefile(dns_port, metrics_port, "a.test"))
    with ServerProcess(["-conf", str(path)]) as srv:
        await trio.to_thread.run_sync(srv.wait_for, "Running configuration SHA512")
        answered = 0
        failures: list[str] = []
        reloaded = trio.Event()
        load_ended = trio.Event()

        async def load() -> None:
            # Until the reloads are done, at most 30,000 queries over 2 minutes, paced to
            # 500 a second at most.
            nonlocal answered
            with trio.move_on_after(120):
                for i in range(30_000):
                    if reloaded.is_set():
                        break
                    q = make_query(f"q{i}.a.test.", "A")
                    try:
                        reply = await dns.asyncquery.udp(q, "127.0.0.1", port=dns_port, timeout=10)
                    except dns.exception.Timeout:
                        failures.append(f"q{i}: no reply in 10s")
                        continue
                    if reply.rcode() != dns.rcode.NOERROR:
                        failures.append(f"q{i}: {dns.rcode.to_text(reply.rcode())}")
                    answered += 1
                    if i % 10 == 9:
                        await trio.sleep(0.02)
            load_ended.set()

        async def answers(more: int) -> None:
            """Wait until ``more`` queries more are answered (or the load ends)."""
            target = answered + more
            while answered < target and not load_ended.is_set():
                await trio.sleep(0.01)

        async def reload_while_loaded() -> None:
            # One reload by the reload plugin, two by SIGUSR1, all while queries flow.
            await answers(20)
            write(path, corefile(dns_port, metrics_port, "a.test", "    errors\n"))
            await trio.to_thread.run_sync(wait_lines, srv, "Reloading complete", 1)
            srv.signal(signal.SIGUSR1)
            await trio.to_thread.run_sync(wait_lines, srv, "Reloading complete", 2)
            srv.signal(signal.SIGUSR1)
            await trio.to_thread.run_sync(wait_lines, srv, "Reloading complete", 3)
            await answers(20)  # queries keep going to the swapped-in configuration
            load_was_running = not load_ended.is_set()
            reloaded.set()
            assert load_was_running, "the query load ended before the reloads did"

        async with trio.open_nursery() as nursery:
            nursery.start_soon(load)
            nursery.start_soon(reload_while_loaded)
        assert failures == []
        assert answered > 50
        srv.signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(srv.wait) == 0


async def test_sigusr1_reload_without_the_plugin(tmp_path: Path) -> None:
    dns_port = free_port()
    path = tmp_path / "Corefile"
    write(path, f"a.test:{dns_port} {{\n    bind 127.0.0.1\n    whoami\n}}\n")
    with ServerProcess(["-conf", str(path)]) as srv:
        await trio.to_thread.run_sync(srv.wait_for, "pycorefile-")
        write(path, f"b.test:{dns_port} {{\n    bind 127.0.0.1\n    whoami\n}}\n")
        srv.signal(signal.SIGUSR1)
        await trio.to_thread.run_sync(wait_lines, srv, "Reloading complete", 1)
        reply = await dns.asyncquery.udp(
            make_query("b.test.", "A"), "127.0.0.1", port=dns_port, timeout=3
        )
        assert reply.rcode() == dns.rcode.NOERROR
        srv.signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(srv.wait) == 0


def test_answers_go_on_while_a_reload_reads_and_builds(tmp_path: Path) -> None:
    # The Corefile becomes a FIFO: the reload's read of it waits until this test
    # writes the new text. While it waits, the server must go on answering; the
    # reading, parsing and building of a reload happen off the event loop.
    dns_port = free_port()
    path = tmp_path / "Corefile"
    write(path, f"a.test:{dns_port} {{\n    bind 127.0.0.1\n    whoami\n}}\n")
    with ServerProcess(["-conf", str(path)]) as srv:
        srv.wait_for("pycorefile-")
        fifo = tmp_path / "Corefile.fifo"
        os.mkfifo(fifo)
        os.replace(fifo, path)
        srv.signal(signal.SIGUSR1)
        writer = open_when_read(path, timeout=15)
        try:
            replies = [ask(dns_port, "a.test.").rcode() for _ in range(20)]
            assert replies == [dns.rcode.NOERROR] * 20
            assert not [line for line in srv.drain(settle=0.05) if "Reloading complete" in line]
            os.write(writer, f"b.test:{dns_port} {{\n    bind 127.0.0.1\n    whoami\n}}\n".encode())
        finally:
            os.close(writer)
        wait_lines(srv, "Reloading complete", 1)
        assert ask(dns_port, "b.test.").rcode() == dns.rcode.NOERROR
        assert ask(dns_port, "a.test.").rcode() == dns.rcode.REFUSED
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0


def open_when_read(fifo: Path, timeout: float) -> int:
    """Open ``fifo`` for writing once a reader has opened it (the server's reload)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno != errno.ENXIO or time.monotonic() > deadline:
                raise
        time.sleep(0.02)
