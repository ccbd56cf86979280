"""Broken and hostile clients against the real server running the sidecar chain.

A client that resets its connection, opens more connections than the process
has files for, pipelines queries and never reads the replies, or sends its
query a byte at a time costs its own connection, never the process: the
server keeps answering everyone else over UDP and TCP.
"""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import struct
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import dns.exception
import dns.message
import trio

from pycorefile import Server, ServerOptions
from pycorefile._conn import ACCEPT_BATCH, ConnectionBudget, Slots, accept_connections
from pycorefile._http import HttpLimits
from pycorefile.testing import Upstream, closed_by_server, make_query, query, serve
from tests.process import ServerProcess, free_port

from ._support import (
    EXTERNAL,
    MESH,
    NOERROR,
    answered,
    keeps_serving,
    rss_kib,
    sidecar,
    upstream_records,
    wait_until,
    write_mesh,
)

MESH_NAME, MESH_ADDRESS = next(iter(MESH.items()))

# -- Clients ------------------------------------------------------------------------------


def frame(wire: bytes) -> bytes:
    """A DNS message as TCP carries it: after its 2-byte length."""
    return struct.pack(">H", len(wire)) + wire


def query_frame(name: str, qid: int = 1) -> bytes:
    q = make_query(name, "A")
    q.id = qid
    return frame(q.to_wire())


async def connect(port: int, *, rcvbuf: int = 0) -> trio.socket.SocketType:
    """A TCP connection to the server on 127.0.0.1 (``rcvbuf``: a small receive buffer)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    return sock


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await sock.send(view) :]


def reset(sock: trio.socket.SocketType) -> None:
    """Close with a TCP reset (RST) instead of a FIN: a crashed client, a NAT timeout."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def read_frame(sock: trio.socket.SocketType, timeout: float = 10.0) -> bytes | None:
    """One framed message; None when the server closed (or reset) the connection first."""
    buf = b""
    with trio.fail_after(timeout):
        while len(buf) < 2 or len(buf) < 2 + struct.unpack(">H", buf[:2])[0]:
            try:
                chunk = await sock.recv(65535)
            except ConnectionResetError:
                return None
            if not chunk:
                return None
            buf += chunk
    return buf[2:]


async def tcp_answered(port: int) -> bool:
    """A new TCP connection gets the mesh name answered.

    A connection the server refuses is reset or closed: the client sees that
    as an OS error, EOF, a broken stream (trio) or a timeout, bare or wrapped
    in an exception group by dnspython's trio backend.
    """
    answered = False
    try:
        reply = await query(("127.0.0.1", port), MESH_NAME, "A", proto="tcp", timeout=2)
        answered = reply.rcode() == NOERROR
    except* (dns.exception.DNSException, OSError, EOFError, trio.BrokenResourceError):
        pass
    return answered


@asynccontextmanager
async def sidecar_server(
    tmp_path: Path, *, extra: str = "", options: ServerOptions | None = None
) -> AsyncIterator[Server]:
    """The sidecar chain in this process, ``cached.example`` already cached."""
    mesh = tmp_path / "mesh.json"
    write_mesh(mesh, MESH)
    async with (
        Upstream(records=upstream_records()).running() as up,
        serve(sidecar(mesh, [up.address], extra=extra), options=options) as server,
    ):
        await answered(server, "cached.example", EXTERNAL["cached.example"])
        yield server


async def connections_released(server: Server) -> None:
    """Every slot of the connection budget is free again, no query left in flight."""

    async def released() -> bool:
        listeners = server.listeners.values()
        return server.budget.dns.used == 0 and all(lst.in_flight == 0 for lst in listeners)

    await wait_until("the connections' slots and queries are released", released, timeout=20)


# -- A server process ---------------------------------------------------------------------


def file_limit(soft: int, hard: int) -> Callable[[], None]:
    """A preexec function: the child starts with these open-file limits."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    return apply


@contextlib.contextmanager
def server_process(
    tmp_path: Path, upstream: str, *, extra: str = "", preexec: Callable[[], None] | None = None
) -> Iterator[tuple[ServerProcess, int]]:
    """The sidecar chain in a ``pycorefile`` process; yields it and its port."""
    mesh = tmp_path / "mesh.json"
    write_mesh(mesh, MESH)
    port = free_port()
    corefile = tmp_path / "Corefile"
    corefile.write_text(sidecar(mesh, [upstream], extra=extra, zone=f".:{port}"))
    with ServerProcess(["-conf", str(corefile), "-quiet"], preexec_fn=preexec) as server:
        yield server, port


async def started(server: ServerProcess, port: int) -> int:
    """Wait until the process answers; its pid."""
    assert server.proc is not None

    async def answering() -> bool:
        assert server.proc is not None
        assert server.proc.poll() is None, "\n".join(server.drain())
        with contextlib.suppress(dns.exception.Timeout, ConnectionRefusedError):
            reply = await query(("127.0.0.1", port), MESH_NAME, "A", timeout=0.5)
            return reply.rcode() == NOERROR
        return False

    await wait_until("the server answers", answering, timeout=30)
    return server.proc.pid


def still_running(server: ServerProcess) -> None:
    assert server.proc is not None
    assert server.proc.poll() is None, "the server exited:\n" + "\n".join(server.drain())


# -- Resets -------------------------------------------------------------------------------


async def test_tcp_resets_idle_mid_query_and_mid_reply_end_only_that_connection(
    tmp_path: Path,
) -> None:
    async with sidecar_server(tmp_path) as server:
        port = server.port()

        # Idle: connected, nothing sent, then a reset.
        reset(await connect(port))
        await keeps_serving(server)

        # Mid-query: the length and half of a query, then a reset.
        sock = await connect(port)
        whole = query_frame(MESH_NAME)
        await sock.send(whole[: len(whole) // 2])
        await trio.sleep(0.2)
        reset(sock)
        await keeps_serving(server)

        # Mid-reply: many pipelined queries (answered from memory and forwarded),
        # a reset once the first replies are waiting unread.
        sock = await connect(port, rcvbuf=4096)
        names = [*MESH, "cached.example"] * 500 + [f"n{i}.unknown.example" for i in range(50)]
        with trio.move_on_after(3), contextlib.suppress(OSError):
            await send_all(sock, b"".join(query_frame(name, i) for i, name in enumerate(names)))
        with trio.fail_after(10):
            await trio.lowlevel.wait_readable(sock)
        reset(sock)
        await keeps_serving(server)

        await connections_released(server)
        await keeps_serving(server)


# -- Out of files -------------------------------------------------------------------------


async def test_more_connections_than_the_file_limit_allows_are_refused_not_fatal(
    tmp_path: Path,
) -> None:
    """Under a limit of 256 open files the budget is 192 connections: 48 for HTTP,
    144 for DNS. Connections beyond it are closed at once; UDP is served all along."""
    limit = 256
    budget = ConnectionBudget.of(file_limit=limit)
    health = free_port()
    extra = f"    health 127.0.0.1:{health}\n    timeouts {{\n        idle 60s\n    }}\n"
    held: list[trio.socket.SocketType] = []
    async with Upstream(records=upstream_records()).running() as up:
        with server_process(
            tmp_path, up.address, extra=extra, preexec=file_limit(limit, limit)
        ) as (server, port):
            await started(server, port)
            await answered(("127.0.0.1", port), "cached.example", EXTERNAL["cached.example"])
            try:
                # DNS over TCP: one query on each connection, kept open afterwards.
                served = refused = 0
                for i in range(budget.dns.limit + 20):
                    sock = await connect(port)
                    held.append(sock)
                    with contextlib.suppress(OSError):
                        await sock.send(query_frame(MESH_NAME, i))
                    reply = await read_frame(sock)
                    if reply is None:
                        refused += 1
                    else:
                        assert dns.message.from_wire(reply).rcode() == NOERROR
                        served += 1
                assert (served, refused) == (budget.dns.limit, 20)

                # The health endpoint: one request on each connection, kept alive.
                ok = closed = 0
                for _ in range(budget.http.limit + 10):
                    sock = await connect(health)
                    held.append(sock)
                    with contextlib.suppress(OSError):
                        await sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                    with trio.fail_after(10):
                        try:
                            head = await sock.recv(4096)
                        except ConnectionResetError:
                            head = b""
                    if head.startswith(b"HTTP/1.1 200"):
                        ok += 1
                    else:
                        assert head == b"", head
                        closed += 1
                assert (ok, closed) == (budget.http.limit, 10)

                # Meanwhile: UDP as usual; a new TCP connection is closed, not served.
                for name, address in MESH.items():
                    await answered(("127.0.0.1", port), name, address)
                await answered(("127.0.0.1", port), "fresh.example", EXTERNAL["fresh.example"])
                assert not await tcp_answered(port)
                still_running(server)
            finally:
                for sock in held:
                    sock.close()

            # Once the connections are gone, TCP is served again.
            await wait_until("TCP is served again", lambda: tcp_answered(port), timeout=20)
            still_running(server)
            assert "Traceback" not in "\n".join(server.drain())


class TaskSteps(trio.abc.Instrument):
    """Counts how often one task runs: each run follows a yield to the event loop."""

    def __init__(self) -> None:
        self.task: trio.lowlevel.Task | None = None
        self.steps = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


async def test_a_burst_of_connections_is_taken_in_one_wakeup() -> None:
    """Connections waiting in the backlog are accepted without a yield between them: taking
    one per turn of the event loop left a burst waiting for seconds while the UDP listener
    kept the loop busy. Beyond the slots, a connection is closed at once."""
    count, slots = 50, Slots(40)
    assert count <= ACCEPT_BATCH
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen(128)
        clients = [socket.create_connection(listening.getsockname()) for _ in range(count)]
        handled: list[trio.SocketStream] = []
        all_handled = trio.Event()

        async def handler(stream: trio.SocketStream) -> None:
            handled.append(stream)
            if len(handled) == slots.limit:
                all_handled.set()
            await trio.sleep_forever()

        steps = TaskSteps()
        async with trio.open_nursery() as nursery:

            async def accept_loop() -> None:
                steps.task = trio.lowlevel.current_task()
                await accept_connections(listening, slots, handler, nursery, "test")

            trio.lowlevel.add_instrument(steps)
            nursery.start_soon(accept_loop)
            with trio.fail_after(20):
                await all_handled.wait()
            trio.lowlevel.remove_instrument(steps)
            assert (slots.used, slots.refused) == (slots.limit, count - slots.limit)
            states: list[str] = []
            with trio.move_on_after(10):
                while states.count("closed") < count - slots.limit:
                    states = [peek_state(client) for client in clients]
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
        for client in clients:
            client.close()
    assert steps.steps <= 3, f"the accept loop ran {steps.steps} times for {count} connections"
    assert (states.count("open"), states.count("closed")) == (slots.limit, count - slots.limit)


def peek_state(sock: socket.socket) -> str:
    """Without waiting: "closed" when the server closed (or reset) the connection."""
    try:
        return "closed" if sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"" else "data"
    except BlockingIOError:
        return "open"
    except ConnectionResetError:
        return "closed"


async def test_accept_out_of_files_pauses_logs_once_and_recovers(tmp_path: Path) -> None:
    """The file limit lowered under a running server: accept() fails with EMFILE.

    The listeners pause and retry instead of ending, say so once per burst
    (not a traceback every 0.1 s), and accept again once files are free.
    """
    health = free_port()
    async with Upstream(records=upstream_records()).running() as up:
        with server_process(tmp_path, up.address, extra=f"    health 127.0.0.1:{health}\n") as (
            server,
            port,
        ):
            pid = await started(server, port)
            await answered(("127.0.0.1", port), "cached.example", EXTERNAL["cached.example"])
            original = resource.prlimit(pid, resource.RLIMIT_NOFILE)
            in_use = len(os.listdir(f"/proc/{pid}/fd"))
            resource.prlimit(pid, resource.RLIMIT_NOFILE, (in_use + 2, original[1]))
            clients: list[trio.socket.SocketType] = []
            try:
                for i in range(30):
                    sock = await connect(port)
                    clients.append(sock)
                    await sock.send(query_frame(MESH_NAME, i))
                for _ in range(10):
                    sock = await connect(health)
                    clients.append(sock)
                    await sock.send(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
                # Accepting fails for a while; UDP needs no new file and is served.
                for _ in range(3):
                    await keeps_serving_udp(port)
                    await trio.sleep(1)
                still_running(server)
            finally:
                for sock in clients:
                    sock.close()
                resource.prlimit(pid, resource.RLIMIT_NOFILE, original)
            await wait_until("TCP is served again", lambda: tcp_answered(port), timeout=20)
            await keeps_serving_udp(port)
            still_running(server)
            output = server.drain()
            pauses = [line for line in output if "cannot accept connections" in line]
            assert 1 <= len(pauses) <= 2, output  # the DNS and the HTTP listener, once each
            assert "Too many open files" in pauses[0]
            assert "Traceback" not in "\n".join(output)


async def keeps_serving_udp(port: int) -> None:
    for name, address in MESH.items():
        await answered(("127.0.0.1", port), name, address)
    await answered(("127.0.0.1", port), "cached.example", EXTERNAL["cached.example"])


async def test_soft_file_limit_is_raised_to_the_hard_limit(tmp_path: Path) -> None:
    async with Upstream(records=upstream_records()).running() as up:
        with server_process(tmp_path, up.address, preexec=file_limit(256, 4096)) as (
            server,
            port,
        ):
            pid = await started(server, port)
            with open(f"/proc/{pid}/limits") as f:
                line = next(line for line in f if line.startswith("Max open files"))
            assert line.split()[3:5] == ["4096", "4096"], line


# -- Clients that do not read -------------------------------------------------------------


async def test_pipelining_client_that_never_reads_is_closed_and_memory_stays_bounded(
    tmp_path: Path,
) -> None:
    size = len(query_frame(MESH_NAME))
    batch = b"".join(query_frame(MESH_NAME, i) for i in range(1000))
    async with Upstream(records=upstream_records()).running() as up:
        with server_process(tmp_path, up.address) as (server, port):
            pid = await started(server, port)
            before = rss_kib(pid)
            sock = await connect(port, rcvbuf=4096)
            sent, peak, closed = 0, before, False
            start = time.monotonic()
            try:
                while sent < 200_000 and time.monotonic() - start < 90:
                    with trio.move_on_after(20) as stuck:
                        try:
                            sent += await sock.send(batch) // size
                        except OSError:
                            closed = True
                            break
                    if stuck.cancelled_caught:
                        break  # neither reading nor closing: fails below
                    peak = max(peak, rss_kib(pid))
                if not closed:
                    closed = await closed_by_server(sock, timeout=20)
            finally:
                sock.close()
            peak = max(peak, rss_kib(pid))
            assert closed, f"the connection is still open after {sent} queries"
            assert peak < 150 * 1024, f"RSS {before} KiB before, peak {peak} KiB"
            assert peak - before < 50 * 1024, f"RSS {before} KiB before, peak {peak} KiB"
            still_running(server)
            await keeps_serving_udp(port)
            assert await tcp_answered(port)
            server.signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(server.wait) == 0


async def test_http_client_that_never_reads_or_trickles_is_closed(tmp_path: Path) -> None:
    health = free_port()
    options = ServerOptions(http=HttpLimits(head=1.0, write=1.0))
    extra = f"    health 127.0.0.1:{health}\n"
    async with sidecar_server(tmp_path, extra=extra, options=options) as server:
        # Requests pipelined, responses never read.
        sock = await connect(health, rcvbuf=4096)
        request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 100
        closed = False
        with trio.move_on_after(60):
            for _ in range(10_000):
                try:
                    await sock.send(request)
                except OSError:
                    closed = True
                    break
        if not closed:
            closed = await closed_by_server(sock, timeout=20)
        sock.close()
        assert closed

        # A request head a byte at a time.
        sock = await connect(health)
        head = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        sent = 0
        with trio.move_on_after(60):
            try:
                for byte in head:
                    await sock.send(bytes([byte]))
                    sent += 1
                    await trio.sleep(0.3)
            except OSError:
                pass
        closed = await closed_by_server(sock, timeout=10)
        sock.close()
        assert closed and sent < len(head), f"{sent} of {len(head)} bytes sent"

        # Others are still served, and the slots are free again.
        stream = await trio.open_tcp_stream("127.0.0.1", health)
        async with stream:
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            with trio.fail_after(10):
                assert (await stream.receive_some(4096)).startswith(b"HTTP/1.1 200")

        async def http_released() -> bool:
            return server.budget.http.used == 0

        await wait_until("the HTTP slots are released", http_released, timeout=20)
        await keeps_serving(server)


# -- Trickling clients --------------------------------------------------------------------


async def trickle(sock: trio.socket.SocketType, data: bytes, every: float) -> int:
    """Send ``data`` one byte every ``every`` seconds; the bytes sent before an error."""
    sent = 0
    with contextlib.suppress(OSError):
        for byte in data:
            await sock.send(bytes([byte]))
            sent += 1
            await trio.sleep(every)
    return sent


async def test_trickling_client_is_dropped_at_the_message_deadline(tmp_path: Path) -> None:
    """``read 2s``: a query sent a byte every 0.5 s (about 20 s for the whole) is cut off,
    as its first query or after one answered; a normal client is served meanwhile."""
    extra = "    timeouts {\n        read 2s\n        idle 30s\n    }\n"
    async with sidecar_server(tmp_path, extra=extra) as server:
        port = server.port()
        whole = query_frame(MESH_NAME)
        results: dict[str, tuple[int, bool]] = {}

        async def first_query() -> None:
            sock = await connect(port)
            with sock:
                sent = await trickle(sock, whole, 0.5)
                results["first"] = (sent, await closed_by_server(sock))

        async def second_query() -> None:
            sock = await connect(port)
            with sock:
                await sock.send(query_frame("cached.example", 7))
                reply = await read_frame(sock)
                assert reply is not None and dns.message.from_wire(reply).id == 7
                sent = await trickle(sock, whole, 0.5)
                results["second"] = (sent, await closed_by_server(sock))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(first_query)
            nursery.start_soon(second_query)
            # A normal client, over and over while the tricklers trickle.
            with trio.move_on_after(3):
                while True:
                    reply = await query(server, MESH_NAME, "A", proto="tcp", timeout=5)
                    assert reply.rcode() == NOERROR
                    await trio.sleep(0.2)
        for name, (sent, closed) in results.items():
            assert closed and sent < len(whole), f"{name}: {sent} of {len(whole)} bytes"
        await connections_released(server)
        await keeps_serving(server)
