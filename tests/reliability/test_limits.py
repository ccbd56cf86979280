"""Limits under pressure, against the real server running the sidecar chain.

Too many TCP connections must not stop UDP service; queries beyond
``forward``'s ``max_concurrent`` are refused at once while the others wait;
resident memory stops growing once the cache is full, however many queries
come.
"""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path

import dns.exception
import dns.message
import dns.rrset
import trio

from pycorefile import ServerOptions
from pycorefile.testing import Upstream, query, serve
from tests.process import ServerProcess, free_port
from tests.udp_server import HeldUpstream

from ._support import (
    EXTERNAL,
    MESH,
    NOERROR,
    PROTOS,
    REFUSED,
    answered,
    burst,
    keeps_serving,
    rcode_text,
    rss_kib,
    sidecar,
    upstream_records,
    wait_until,
    write_mesh,
)


async def test_tcp_flood_beyond_the_cap_keeps_udp_serving(tmp_path: Path) -> None:
    cap, flood = 8, 40
    mesh = tmp_path / "mesh.json"
    write_mesh(mesh, MESH)
    options = ServerOptions(max_connections=cap + 1, max_http_connections=1)  # cap for DNS
    async with (
        Upstream(records=upstream_records()).running() as up,
        serve(sidecar(mesh, [up.address]), options=options) as server,
    ):
        await answered(server, "cached.example", EXTERNAL["cached.example"])
        port = server.port()
        streams = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(flood)]
        try:
            closed: list[bool] = []

            async def closed_by_server(stream: trio.SocketStream) -> None:
                with trio.move_on_after(1.0):
                    closed.append(await stream.receive_some(10) == b"")
                    return
                closed.append(False)

            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(closed_by_server, stream)
                # Meanwhile, UDP is served in full.
                for name, address in MESH.items():
                    await answered(server, name, address)
                await answered(server, "cached.example", EXTERNAL["cached.example"])
                await answered(server, "fresh.example", EXTERNAL["fresh.example"])
            assert closed.count(False) == cap  # the first connections keep their slot
            assert closed.count(True) == flood - cap  # the rest are closed at once
        finally:
            for stream in streams:
                await stream.aclose()

        # Once the flood is gone, TCP is served again.
        async def tcp_served() -> bool:
            with contextlib.suppress(dns.exception.DNSException, OSError, EOFError):
                reply = await query(server, "later.example", "A", proto="tcp", timeout=0.5)
                return reply.rcode() == NOERROR
            return False

        await wait_until("TCP is served again", tcp_served)


async def test_forward_max_concurrent_refuses_at_once(tmp_path: Path) -> None:
    limit = 4
    mesh = tmp_path / "mesh.json"
    write_mesh(mesh, MESH)
    slow = {f"slow{i}.example": f"192.0.2.{100 + i}" for i in range(limit + 6)}
    held, extra = list(slow)[:limit], list(slow)[limit:]
    async with HeldUpstream(upstream_records({**EXTERNAL, **slow})).running() as up:
        forward = f"max_concurrent {limit}\n        read_timeout 5s"
        async with serve(sidecar(mesh, [up.address], forward=forward)) as server:
            await answered(server, "cached.example", EXTERNAL["cached.example"])
            up.holding = True
            results: dict[str, int] = {}

            async def ask(name: str) -> None:
                results[name] = (await query(server, name, "A", timeout=8)).rcode()

            async with trio.open_nursery() as nursery:
                for name in held:
                    nursery.start_soon(ask, name)

                async def all_held() -> bool:
                    return all(f"{name}." in up.arrived for name in held)

                await wait_until("the upstream holds the first queries", all_held)
                with trio.fail_after(1):  # at once: nothing waits for the upstream
                    for i, name in enumerate(extra):
                        reply = await query(server, name, "A", proto=PROTOS[i % 2])
                        assert reply.rcode() == REFUSED, f"{name}: {rcode_text(reply)}"
                    # What needs no upstream is answered as usual.
                    await keeps_serving(server)
                assert not results  # still held
                up.release.set()
            assert results == {name: NOERROR for name in held}
            assert not any(f"{name}." in up.arrived for name in extra)  # never forwarded
            # A refusal is not cached: asked again with room, answered.
            await answered(server, extra[0], slow[extra[0]])


def _answer_every_name(q: dns.message.Message) -> dns.message.Message:
    """A upstream that knows every name: one A record, TTL 300."""
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A", "192.0.2.77"))
    return r


async def test_memory_stays_flat_over_a_burst(tmp_path: Path) -> None:
    """RSS of a server process, round after round of queries once its cache is full.

    Each round asks half of a pool of names six times the cache's size, so the
    cache keeps evicting and the upstream keeps being asked; the pool stays well
    below the bound of the server's parse memo, which fills once and stays.
    """
    rounds, pool, per_round, hot = 10, 3000, 1500, 500
    mesh = tmp_path / "mesh.json"
    write_mesh(mesh, MESH)
    port = free_port()
    target = ("127.0.0.1", port)
    async with Upstream(handler=_answer_every_name).running() as up:
        corefile = tmp_path / "Corefile"
        corefile.write_text(
            sidecar(
                mesh,
                [up.address],
                cache="success 500\n        denial 500",
                zone=f".:{port}",
            )
        )
        with ServerProcess(["-conf", str(corefile), "-quiet"]) as server:
            assert server.proc is not None
            pid = server.proc.pid

            async def started() -> bool:
                with contextlib.suppress(dns.exception.Timeout, ConnectionRefusedError):
                    reply = await query(target, "web.shop.svc.cluster.local", "A", timeout=0.3)
                    return reply.rcode() == NOERROR
                return False

            await wait_until("the server answers", started, timeout=20)
            rss: list[int] = []
            for r in range(rounds):
                start = r * per_round % pool
                names = [f"u{i}.burst.example" for i in range(start, start + per_round)]
                names += [f"hot{i % 50}.burst.example" for i in range(hot)]
                names += [list(MESH)[i % len(MESH)] for i in range(hot)]
                counts = await burst(target, names)
                assert counts == {NOERROR: len(names)}, f"round {r}: {counts}"
                for i in range(10):  # and connections come and go
                    reply = await query(target, f"hot{i}.burst.example", "A", proto="tcp")
                    assert reply.rcode() == NOERROR
                rss.append(rss_kib(pid))
            server.signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(server.wait) == 0
    # The first rounds fill the cache, the parse memo and the allocator's pools; after
    # that, 15,000 more queries may not add 512 KiB (35 bytes each).
    growth = rss[-1] - rss[3]
    assert growth < 512, f"RSS (KiB) by round: {rss}"
