"""One test per fault, against the real server running the sidecar chain.

In every case the server must keep answering what it can (mesh names from
its table, names in its cache), answer SERVFAIL for the rest (never
NXDOMAIN for an upstream that failed), lose no table or allocation it had,
and pick up the good state again once the fault is gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.rcode
import dns.rrset
import pytest
import trio
import yaml

from pycorefile import (
    Directive,
    Pending,
    Plugin,
    Reply,
    Request,
    Result,
    Server,
    SetupContext,
    check_args,
)
from pycorefile._registry import Registry
from pycorefile.testing import Upstream, query, serve
from pycorefile_plugins.bind import BindPlugin
from pycorefile_plugins.cache import CachePlugin
from pycorefile_plugins.errors import ErrorsPlugin
from pycorefile_plugins.forward import ForwardPlugin
from pycorefile_plugins.log import LogPlugin
from pycorefile_plugins.meshhosts import MeshHostsPlugin
from tests.process import ServerProcess, free_port

from ._support import (
    ENTRIES,
    EXTERNAL,
    MESH,
    OLDER,
    PROTOS,
    CuttingUpstream,
    answered,
    autoalloc_block,
    keeps_serving,
    mesh_plugin,
    mesh_text,
    rcode_or_timeout,
    servfail,
    sidecar,
    stamp,
    until_answering,
    upstream_records,
    wait_until,
    write_entries,
    write_mesh,
)

SPOOFED = "203.0.113.66"
"""The address every forged reply carries: it must never reach a client."""


@asynccontextmanager
async def sidecar_server(
    tmp_path: Path, upstreams: Sequence[str], **options: Any
) -> AsyncIterator[Server]:
    """The sidecar chain on a fresh mesh table, with ``cached.example`` already cached."""
    mesh = tmp_path / "mesh.json"
    write_mesh(mesh, MESH)
    async with serve(sidecar(mesh, upstreams, **options)) as server:
        await answered(server, "cached.example", EXTERNAL["cached.example"])
        yield server


@asynccontextmanager
async def stoppable(up: Upstream) -> AsyncIterator[Callable[[], Awaitable[None]]]:
    """Run ``up`` in its own task; yields a function that stops it while the test goes on."""
    stop, stopped = trio.Event(), trio.Event()

    async def run(task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with up.running():
                task_status.started()
                await stop.wait()
        finally:
            stopped.set()

    async def halt() -> None:
        stop.set()
        await stopped.wait()

    async with trio.open_nursery() as nursery:
        await nursery.start(run)
        try:
            yield halt
        finally:
            stop.set()


# -- Upstream faults ---------------------------------------------------------------------


async def test_upstream_silent(tmp_path: Path) -> None:
    async with (
        Upstream(records=upstream_records()).running() as up,
        sidecar_server(tmp_path, [up.address], forward="read_timeout 250ms") as server,
    ):
        up.mode = "silent"
        for proto in PROTOS:
            # A name per transport: the first SERVFAIL is cached for a few seconds.
            await servfail(server, f"{proto}.fresh.example", proto=proto)
            assert up.count(f"{proto}.fresh.example") == 2  # two tries, both unanswered
        await keeps_serving(server)
        assert mesh_plugin(server).table.entries == len(MESH)
        up.mode = "answer"
        await answered(server, "later.example", EXTERNAL["later.example"])


async def test_upstream_slow_answers_after_the_client_gave_up(tmp_path: Path) -> None:
    async with Upstream(records=upstream_records()).running() as up:
        forward = "read_timeout 1s"
        async with sidecar_server(tmp_path, [up.address], forward=forward) as server:
            up.delay = 0.6
            async with trio.open_nursery() as nursery:
                gave_up: list[int | None] = []

                async def impatient_client() -> None:
                    gave_up.append(await rcode_or_timeout(server, "fresh.example", 0.3))

                nursery.start_soon(impatient_client)
                # While the upstream takes its time, the table and the cache answer at once.
                with trio.fail_after(0.5):
                    await answered(
                        server, "web.shop.svc.cluster.local", MESH["web.shop.svc.cluster.local"]
                    )
                    await answered(server, "cached.example", EXTERNAL["cached.example"])
            assert gave_up == [None]
            # The client retries a second after it first asked, as stub resolvers do; the
            # late reply has been taken meanwhile, and the retry is answered from the cache.
            await trio.sleep(1.0 - 0.3)
            with trio.fail_after(0.3):
                await answered(server, "fresh.example", EXTERNAL["fresh.example"])
            assert up.count("fresh.example") == 1
            # Slower than every try may wait: SERVFAIL, never NXDOMAIN.
            up.delay = 1.5
            await servfail(server, "later.example")
            await keeps_serving(server)
            # Recovered.
            up.delay = 0
            up.records[("recovered.example.", "A")] = ["192.0.2.9"]
            await answered(server, "recovered.example", "192.0.2.9")


async def test_upstream_refusing_port_unreachable(tmp_path: Path) -> None:
    up = Upstream(records=upstream_records())
    async with stoppable(up) as stop_upstream:
        forward = "read_timeout 2s"
        async with sidecar_server(tmp_path, [up.address], forward=forward) as server:
            await stop_upstream()
            # Nothing listens there now: ICMP port unreachable (over TCP, a reset).
            for proto in PROTOS:
                with trio.fail_after(1.5):  # refused at once, not after read_timeout
                    await servfail(server, f"{proto}.fresh.example", proto=proto)
            await keeps_serving(server)
            assert mesh_plugin(server).table.entries == len(MESH)
            # Back on the same port: answered again.
            async with Upstream(records=upstream_records(), port=up.port).running():
                await answered(server, "later.example", EXTERNAL["later.example"])


def _reply(q: dns.message.Message, address: str, name: str | None = None) -> dns.message.Message:
    """A response to ``q`` answering ``name`` (default: the question) with ``address``."""
    r = dns.message.make_response(q)
    owner = name or q.question[0].name.to_text()
    r.answer.append(dns.rrset.from_text(owner, 300, "IN", "A", address))
    return r


def _garbage(q: dns.message.Message) -> list[bytes]:
    """Replies that are not DNS messages, some carrying the query's ID and QR bit."""
    head = q.id.to_bytes(2, "big") + b"\x81\x80"
    question = q.question[0].name.to_digestable() + b"\x00\x01\x00\x01"
    return [
        b"",
        b"\x13\x37" + bytes(range(40)),
        head[:5],
        head + b"\x00\x01\x00\x00\x00\x00\x00\x00",  # a question promised, none sent
        head + b"\x00\x01\x00\x01\x00\x00\x00\x00" + question + b"\xc0\x0c\x00\x01",  # cut record
        head + b"\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c" + b"\x00\x01\x00\x01",  # pointer loop
        bytes(512),
    ]


async def test_upstream_sending_garbage(tmp_path: Path) -> None:
    honest = Upstream(records=upstream_records())

    def garbage_then_nothing(q: dns.message.Message) -> list[bytes]:
        return _garbage(q)

    def garbage_then_answer(q: dns.message.Message) -> list[bytes]:
        real = honest.respond(q.to_wire(), "udp")
        return [*_garbage(q), *([real] if real else [])]

    async with Upstream(records=upstream_records()).running() as up:
        forward = "read_timeout 300ms"
        async with sidecar_server(tmp_path, [up.address], forward=forward) as server:
            up.handler = garbage_then_nothing
            for proto in PROTOS:
                await servfail(server, f"{proto}.fresh.example", proto=proto)
                assert up.count(f"{proto}.fresh.example") == 2
            up.mode, up.handler = "garbage", None
            await servfail(server, "fresh2.example")
            await keeps_serving(server)
            # Garbage ahead of the real reply does not spoil the exchange.
            up.handler = garbage_then_answer
            for proto in PROTOS:
                await answered(server, "later.example", EXTERNAL["later.example"], proto=proto)


async def test_upstream_spoofing_wrong_id_or_question(tmp_path: Path) -> None:
    honest = Upstream(records=upstream_records())
    offpath: list[int] = []

    def forged_first(q: dns.message.Message) -> list[dns.message.Message | bytes]:
        """Forgeries the forwarder must drop, then the real reply, which it must accept."""
        wrong_id = _reply(q, SPOOFED)
        wrong_id.id = q.id ^ 0x5A5A
        wrong_name = _reply(dns.message.make_query("evil.example.", "A", id=q.id), SPOOFED)
        wrong_type = dns.message.make_response(
            dns.message.make_query(q.question[0].name, "AAAA", id=q.id)
        )
        not_a_reply = _reply(q, SPOOFED)
        not_a_reply.flags &= ~dns.flags.QR
        proto = up.queries[-1][2] if up.queries else "udp"
        if proto == "udp" and up.client:
            # Right ID, right question, wrong source address: an off-path attacker.
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as spoofer:
                spoofer.bind(("127.0.0.3", 0))
                spoofer.sendto(_reply(q, SPOOFED).to_wire(), up.client[:2])
                offpath.append(1)
        real = honest.respond(q.to_wire(), proto)
        return [wrong_id, wrong_name, wrong_type, not_a_reply, *([real] if real else [])]

    async with Upstream(records=upstream_records()).running() as up:
        forward = "read_timeout 500ms"
        async with sidecar_server(tmp_path, [up.address], forward=forward) as server:
            up.handler = forged_first
            await answered(server, "fresh.example", EXTERNAL["fresh.example"], proto="udp")
            await answered(server, "later.example", EXTERNAL["later.example"], proto="tcp")
            assert offpath  # the off-path forgery was sent, and lost
            # What the cache kept is the real answer too.
            await answered(server, "fresh.example", EXTERNAL["fresh.example"], proto="tcp")
            # Only forgeries, never the real reply: SERVFAIL, nothing cached.
            up.handler, up.mode = None, "wrong_id"
            await servfail(server, "other.example")
            await keeps_serving(server)


async def test_upstream_closing_tcp_mid_reply(tmp_path: Path) -> None:
    async with CuttingUpstream(upstream_records()).running() as up:
        forward = "force_tcp\n        read_timeout 500ms"
        async with sidecar_server(tmp_path, [up.address], forward=forward) as server:
            up.cut = True
            for proto in PROTOS:
                with trio.fail_after(2):  # a closed connection fails the try at once
                    await servfail(server, f"{proto}.fresh.example", proto=proto)
                # Two tries (and one more when a pooled connection was the one cut).
                assert up.cut_names.count(f"{proto}.fresh.example.") >= 2
            await keeps_serving(server)
            up.cut = False
            # No half-read connection is reused: the next query gets a clean answer.
            for proto in PROTOS:
                await answered(server, "later.example", EXTERNAL["later.example"], proto=proto)


async def test_upstream_flapping_fails_over_to_a_healthy_one(tmp_path: Path) -> None:
    names = iter(f"n{i}.flap.example" for i in range(1000))
    records = {(f"n{i}.flap.example.", "A"): ["192.0.2.50"] for i in range(1000)}
    records.update(upstream_records())
    flapping = Upstream(records=records, host="127.0.0.1")
    healthy = Upstream(records=records, host="127.0.0.2")
    async with flapping.running(), healthy.running():
        forward = (
            "policy sequential\n        health_check 100ms\n        max_fails 2\n"
            "        read_timeout 300ms"
        )
        upstreams = [flapping.address, healthy.address]
        async with sidecar_server(tmp_path, upstreams, forward=forward) as server:

            async def served_by(up: Upstream, other: Upstream) -> bool:
                """A new name is answered, and only ``up`` was asked for it."""
                name = next(names)
                await answered(server, name, "192.0.2.50")
                return up.count(name) == 1 and other.count(name) == 0

            for _ in range(2):  # down, up, down, up
                assert await served_by(flapping, healthy)
                flapping.mode = "silent"
                # Every query is answered meanwhile; once the health checks mark the
                # flapping upstream down, the healthy one is asked first.
                await wait_until(
                    "the healthy upstream takes over", lambda: served_by(healthy, flapping)
                )
                await keeps_serving(server)
                flapping.mode = "answer"
                await wait_until(
                    "the recovered upstream is used again", lambda: served_by(flapping, healthy)
                )


# -- The mesh table's file ---------------------------------------------------------------

NEW_HOST = "new.shop.svc.cluster.local"
NEW_TABLE = {**MESH, NEW_HOST: "10.96.0.20"}


async def _reload_attempted(server: Server, before: int) -> None:
    plugin = mesh_plugin(server)

    async def attempted() -> bool:
        return plugin.loads + plugin.load_failures > before

    await wait_until("meshhosts read the file again", attempted)


async def _new_table_served(server: Server, loads_before: int) -> None:
    """Wait for a successful load, then expect the new table in full.

    The new host is not asked before the table has it: its NXDOMAIN (from the
    upstream, through the fallthrough) would be cached in front of meshhosts.
    """
    plugin = mesh_plugin(server)

    async def loaded() -> bool:
        return plugin.loads > loads_before

    await wait_until("the good file is loaded", loaded)
    assert plugin.table.entries == len(NEW_TABLE)
    await keeps_serving(server, NEW_TABLE)


async def test_mesh_file_deleted(tmp_path: Path) -> None:
    async with (
        Upstream(records=upstream_records()).running() as up,
        sidecar_server(tmp_path, [up.address]) as server,
    ):
        mesh, plugin = tmp_path / "mesh.json", mesh_plugin(server)
        before = plugin.loads + plugin.load_failures
        mesh.unlink()
        await _reload_attempted(server, before)
        await keeps_serving(server)
        await answered(server, "fresh.example", EXTERNAL["fresh.example"])
        assert plugin.table.entries == len(MESH) and plugin.ready()
        loads = plugin.loads
        write_mesh(mesh, NEW_TABLE, version=3)
        await _new_table_served(server, loads)


async def test_mesh_file_garbled(tmp_path: Path) -> None:
    async with (
        Upstream(records=upstream_records()).running() as up,
        sidecar_server(tmp_path, [up.address]) as server,
    ):
        mesh, plugin = tmp_path / "mesh.json", mesh_plugin(server)
        before = plugin.loads + plugin.load_failures
        mesh.write_bytes(b"\x00\xff\xfe{{ not: [a table\n\x1b" * 20)
        stamp(mesh, 2)
        await _reload_attempted(server, before)
        await keeps_serving(server)
        await answered(server, "fresh.example", EXTERNAL["fresh.example"])
        assert plugin.table.entries == len(MESH)
        loads = plugin.loads
        write_mesh(mesh, NEW_TABLE, version=3)
        await _new_table_served(server, loads)


def _yaml_table(hosts: dict[str, str]) -> str:
    """The NameTable as block-style YAML, as a person or a tool writes it."""
    return str(yaml.safe_dump(json.loads(mesh_text(hosts)), default_flow_style=False))


def _cut_in_second_address(text: str) -> int:
    """Just before the last digit of the second host's address ("10.96.0.1|1")."""
    second = MESH["cart.shop.svc.cluster.local"]
    return text.index(second) + len(second) - 1


# file name, how the table is written, where the writer is caught
HALF_WRITTEN: dict[str, tuple[str, Callable[[dict[str, str]], str], Callable[[str], int]]] = {
    "json-half": ("mesh.json", mesh_text, lambda text: len(text) // 2),
    "yaml-empty": ("mesh.yaml", _yaml_table, lambda text: 0),
    "yaml-mid-address": ("mesh.yaml", _yaml_table, _cut_in_second_address),
}


@pytest.mark.parametrize("case", list(HALF_WRITTEN))
async def test_mesh_file_half_written(tmp_path: Path, case: str) -> None:
    """A writer rewriting the file in place is caught in the middle of it.

    The reload is run by hand (``check``, one round of the reload loop) so that
    it reads exactly the half-written file, not a moment earlier or later.
    """
    filename, render, cut_at = HALF_WRITTEN[case]
    mesh = tmp_path / filename
    mesh.write_text(render(MESH))
    stamp(mesh, 1)
    async with (
        Upstream(records=upstream_records()).running() as up,
        serve(sidecar(mesh, [up.address], meshhosts="reload 0")) as server,
    ):
        # Mesh names are not asked before the fault: the cache in front of meshhosts
        # would answer them, and hide what the table lost.
        await answered(server, "cached.example", EXTERNAL["cached.example"])
        plugin = mesh_plugin(server)
        text = render(NEW_TABLE)
        cut = cut_at(text)
        with mesh.open("w") as writer:  # truncates: the rewrite has begun
            writer.write(text[:cut])
            writer.flush()
            await plugin.check()
            # The last good table answers, every host with its own address.
            await keeps_serving(server)
            await answered(server, "fresh.example", EXTERNAL["fresh.example"])
            assert plugin.table.entries == len(MESH)
            writer.write(text[cut:])
        loads = plugin.loads
        await plugin.check()
        await _new_table_served(server, loads)


# -- The autoalloc state file ------------------------------------------------------------


async def test_autoalloc_state_garbled_across_a_restart(tmp_path: Path) -> None:
    """Allocations survive a restart whose main state file is garbage, served by meshhosts."""
    mesh, entries, state = tmp_path / "mesh.json", tmp_path / "entries.yaml", tmp_path / "a.json"
    write_mesh(mesh, MESH)
    write_entries(entries, ENTRIES)
    port = free_port()
    target = ("127.0.0.1", port)
    alloc = autoalloc_block(state)
    async with Upstream(records=upstream_records()).running() as up:
        corefile = tmp_path / "Corefile"
        corefile.write_text(
            sidecar(f"{mesh} {entries}", [up.address], extra=alloc, zone=f".:{port}")
        )
        args = ["-conf", str(corefile), "-quiet"]

        async def allocations() -> dict[str, list[str]]:
            out = {}
            for host in ("pg", "redis", "kafka"):
                name = f"{host}.partner.example"
                a = await query(target, name, "A")
                aaaa = await query(target, name, "AAAA", proto="tcp")
                out[host] = sorted(r.to_text() for rr in (*a.answer, *aaaa.answer) for r in rr)
            return out

        with ServerProcess(args) as first:
            await until_answering(target, "pg.partner.example", first)
            before = await allocations()
            await answered(target, "cached.example", EXTERNAL["cached.example"])
            first.signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(first.wait) == 0
        assert before["pg"] == ["2001:2::1", "240.240.0.1"]
        assert before["redis"] == ["2001:2::2", "240.240.0.2"]
        assert before["kafka"] == []

        state.write_bytes(b'{"version": 1, "hosts": [{"host": "pg.partner.exa\x00\xff')
        write_entries(entries, [*ENTRIES, OLDER])
        with ServerProcess(args) as second:
            await until_answering(target, "kafka.partner.example", second)
            after = await allocations()
            await keeps_serving(target, cached={})
            await answered(target, "fresh.example", EXTERNAL["fresh.example"])
            line = await trio.to_thread.run_sync(second.wait_for, "state copy not used")
            second.signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(second.wait) == 0
    assert str(state) in line
    assert after["pg"] == before["pg"] and after["redis"] == before["redis"]
    assert after["kafka"] == ["2001:2::3", "240.240.0.3"]  # a new pair, not a taken one
    stored = json.loads(state.read_text())
    assert {h["host"] for h in stored["hosts"]} == {
        "pg.partner.example",
        "redis.partner.example",
        "kafka.partner.example",
    }


async def test_autoalloc_state_garbled_while_serving(tmp_path: Path) -> None:
    """The state file is damaged under a running server; the next table build keeps
    every pair, gives the new host a free one, and writes a good file again."""
    mesh, entries, state = tmp_path / "mesh.json", tmp_path / "entries.yaml", tmp_path / "a.json"
    write_mesh(mesh, MESH)
    write_entries(entries, ENTRIES)
    alloc = autoalloc_block(state)
    async with (
        Upstream(records=upstream_records()).running() as up,
        serve(sidecar(f"{mesh} {entries}", [up.address], extra=alloc)) as server,
    ):
        await answered(server, "pg.partner.example", "240.240.0.1")
        await answered(server, "redis.partner.example", "2001:2::2", rdtype="AAAA")
        plugin = mesh_plugin(server)
        loads = plugin.loads
        state.write_bytes(b"\x00" * 100)
        write_entries(entries, [*ENTRIES, OLDER])

        async def loaded() -> bool:
            return plugin.loads > loads

        await wait_until("meshhosts builds the new table", loaded)
        await keeps_serving(server)
        await answered(server, "pg.partner.example", "240.240.0.1", proto="tcp")
        await answered(server, "redis.partner.example", "240.240.0.2")
        await answered(server, "kafka.partner.example", "240.240.0.3")

        async def rewritten() -> bool:
            with contextlib.suppress(ValueError):
                return len(json.loads(state.read_text())["hosts"]) == 3
            return False

        await wait_until("the state file is written again", rewritten)


# -- A plugin that raises on every query ------------------------------------------------


class ExplodingPlugin(Plugin):
    """``explode [now|later]``: raises on every query, at once or after waiting."""

    def __init__(self, later: bool) -> None:
        self.later = later
        self.calls = 0

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> ExplodingPlugin:
        check_args(directives[0], 0, 1)
        return cls(directives[0].args == ("later",))

    def handle(self, request: Request) -> Result:
        if self.later:
            return Pending(self._explode_later(request))
        self.calls += 1
        raise RuntimeError(f"exploded on {request.name}")

    async def _explode_later(self, request: Request) -> Reply:
        await trio.sleep(0)
        self.calls += 1
        raise RuntimeError(f"exploded on {request.name}")


def _registry() -> Registry:
    return Registry.from_classes(
        {
            "bind": BindPlugin,
            "log": LogPlugin,
            "errors": ErrorsPlugin,
            "cache": CachePlugin,
            "meshhosts": MeshHostsPlugin,
            "forward": ForwardPlugin,
            "explode": ExplodingPlugin,
        }
    )


async def test_plugin_raising_on_every_query(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mesh = tmp_path / "mesh.json"
    write_mesh(mesh, MESH)
    async with Upstream(records=upstream_records()).running() as up:
        corefile = (
            sidecar(mesh, [up.address], zone=".:0")
            + "now.test:0 {\n    bind 127.0.0.1\n    log\n    errors\n    cache\n"
            "    explode now\n}\n"
            "later.test:0 {\n    bind 127.0.0.1\n    errors\n    cache\n    explode later\n}\n"
            "bare.test:0 {\n    bind 127.0.0.1\n    explode now\n}\n"
        )
        with caplog.at_level(logging.ERROR, logger="pycorefile"):
            async with serve(corefile, registry=_registry()) as server:
                await answered(server, "cached.example", EXTERNAL["cached.example"])
                for _ in range(3):  # never cached, never fatal
                    for zone in ("now.test", "later.test", "bare.test"):
                        for proto in PROTOS:
                            await servfail(server, f"www.{zone}", proto=proto)
                await keeps_serving(server)
                await answered(server, "fresh.example", EXTERNAL["fresh.example"])
                assert server.config is not None
                calls = [p.calls for p in server.config.find("explode")]  # type: ignore[attr-defined]
                assert calls == [6, 6, 6]
    messages = [r.getMessage() for r in caplog.records]
    # A raising plugin is a panic: the server logs it by plugin name, with or
    # without the errors plugin (which, as CoreDNS's, logs returned errors only).
    for zone in ("now.test", "later.test", "bare.test"):
        expected = f"plugin/explode: www.{zone}. A: RuntimeError: exploded on"
        assert sum(expected in m for m in messages) == 6, messages
    assert not [m for m in messages if m.startswith("plugin/errors:")]
