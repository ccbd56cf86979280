"""Soak under attack: legitimate load below saturation beside every hostile client at once.

    python bench/attack_soak.py                  # 60 s
    python bench/attack_soak.py -d 20 --json     # shorter; the figures as JSON
    python bench/attack_soak.py --write          # record them in docs/reliability.md

Starts dnsmasq as the upstream and pycorefile with the sidecar chain (errors,
health, ready, prometheus, reload, acl, autopath, cache, autoalloc,
meshhosts with a directory of mesh files: 10,000 Services and a file of
ServiceEntries, forward) under a lowered open-file limit (1024: a budget of
704 DNS and 64 HTTP connections). It measures the rate the server reaches at
saturation, alone, then for the duration runs side by side:

- legitimate load: dnsperf at half of that rate (``-Q``, an open loop): mesh
  names, autopath's first tries, upstream names and names never seen;
- a canary: a mesh name every 50 ms, each answer timed, so that a slow
  answer can be put next to the attacks that came in bursts just before it;
- attacks, each in its own loop bounded in count and time (``--attacks`` to
  run some only): TCP clients that reset (RST) idle, in the middle of a query
  and while replies wait (``resets``); more DNS and HTTP connections than the
  budget, each with a request, held (``flood``); a pipelining client that
  never reads (``pipeline``); trickling DNS and HTTP clients (``slowloris``);
  queries of all 65,536 types, special ones first, then in a shuffled order
  (``types``); a metrics scrape every 2 s (``scrapes``); replays of the
  forward plugin's loop probes, read from the upstream's query log, and of
  probe-shaped names (``loop_probes``); malformed packets over UDP and TCP
  (``malformed``); a mesh file rewritten in turn with damaged content (a
  YAML date that does not exist, an alias bomb, a file over
  ``max_file_size``) and good content (``mesh_file``); SIGUSR1 (``sigusr1``).
  The types and the malformed packets go at a tenth of the saturated rate
  each (``--attack-share``).

It passes when no legitimate query is lost or fails (anything but NOERROR or
NXDOMAIN), and the server is still alive and answering over UDP and TCP at
the end. It reports the legitimate load's latency, the server's memory and
open files, what each attack did and the canary's slowest answers. Every
socket is on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import resource
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.rcode
import trio
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common import (
    CLIENT_CORE,
    ROOT,
    Data,
    DnsperfRun,
    dnsperf,
    free_port,
    open_fds,
    pycorefile_process,
    rss_mb,
    still_answers,
    upstream,
    wait_answering,
    write_between_markers,
)

from pycorefile._conn import ConnectionBudget
from pycorefile.testing import closed_by_server

LEGIT_SHARE = 0.5
"""The legitimate load's rate, as a share of the rate reached at saturation."""
MAX_FILE_SIZE = 4 * 1024 * 1024
"""meshhosts ``max_file_size`` in the Corefile: the oversized mesh file is above it."""
MESH_NAME = "svc1.ns2.svc.cluster.local"
ATTACK_SHARE = 0.1
"""The rate of the all-types queries, and of the malformed packets, as a share of the rate
reached at saturation."""
SPECIAL_TYPES = (0, 41, 249, 250, 251, 252, 253, 254, 255, 256, 32768, 32769, 65280, 65535)
"""Asked first: reserved, OPT, TKEY, TSIG, IXFR, AXFR, MAILB, MAILA, ANY, URI, TA, DLV,
private use; then every other type in a shuffled order, so that a short run covers the
whole range."""

ATTACKS = (
    "resets", "flood", "pipeline", "slowloris", "types", "scrapes", "loop_probes", "malformed",
    "mesh_file", "sigusr1",
)  # fmt: skip

Sock = trio.socket.SocketType


# -- The server ------------------------------------------------------------------------


def corefile(port: int, ports: dict[str, int], up: int, mesh_dir: Path, state: Path) -> str:
    return f""".:{port} {{
    bind 127.0.0.1
    errors
    health 127.0.0.1:{ports["health"]}
    ready 127.0.0.1:{ports["ready"]}
    prometheus 127.0.0.1:{ports["metrics"]}
    reload 2s 1s
    acl {{
        block type ANY
        allow net 127.0.0.0/8 ::1
        block
    }}
    autopath @meshhosts
    cache
    autoalloc {{
        state {state}
        http 127.0.0.1:{ports["autoalloc"]}
    }}
    meshhosts {{
        file {mesh_dir}
        namespace ns1
        reload 1s
        max_file_size {MAX_FILE_SIZE}
        fallthrough
    }}
    forward . 127.0.0.1:{up}
}}
"""


def legit_queries(data: Data) -> Path:
    """Mesh names, autopath first tries, upstream names (cached) and names never seen."""
    lines = []
    for i in range(200_000):
        ns = f"ns{i % 10 + 1}"
        kind = i % 4
        if kind == 0:
            lines.append(f"svc{i % 10_000}.{ns}.svc.cluster.local A")
        elif kind == 1:
            lines.append(f"svc{i % 10_000}.{ns}.ns1.svc.cluster.local A")  # autopath
        elif kind == 2:
            # the upstream's names (A) and names it has no AAAA for (NODATA)
            upstream = f"name{i % 1000}.bench.test A"
            nodata = f"www{i % 500}.ext.bench.test AAAA"
            name = upstream if i % 8 == 2 else nodata
            lines.append(name)
        else:
            lines.append(f"u{i}.legit.miss.bench.test A")
    return data.queries("legit", lines)


def file_limit(limit: int) -> Callable[[], None]:
    """A preexec function: soft and hard open-file limits of ``limit`` (the server raises
    its soft limit to the hard one at start, so both are lowered)."""

    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

    return apply


# -- Wire helpers ----------------------------------------------------------------------


def query_wire(name: str, qtype: int = 1, qid: int = 0, *, flags: int = 0x0100) -> bytes:
    """A query as raw bytes (any type, even the ones dnspython refuses to make)."""
    qname = b"".join(bytes([len(label)]) + label.encode() for label in name.strip(".").split("."))
    return struct.pack(">6H", qid, flags, 1, 0, 0, 0) + qname + b"\0" + struct.pack(">HH", qtype, 1)


def frame(wire: bytes) -> bytes:
    return struct.pack(">H", len(wire)) + wire


def rcode_of(wire: bytes) -> str:
    """The reply's response code by name (a reply shorter than a header: "short")."""
    return dns.rcode.to_text(dns.rcode.Rcode(wire[3] & 0x0F)) if len(wire) >= 4 else "short"


def malformed_packet(r: random.Random) -> bytes:
    """A packet no client should send: FORMERR (or another error rcode) or dropped."""
    qid = r.getrandbits(16)
    query = query_wire(MESH_NAME, qid=qid)
    header, question = query[:12], query[12:]
    with_opt = struct.pack(">6H", qid, 0x0100, 1, 0, 0, 1) + question
    one = struct.pack(">6H", qid, 0x0100, 1, 0, 0, 0)
    packets = [
        r.randbytes(r.randrange(0, 512)),  # random bytes
        query[: r.randrange(0, 12)],  # a header cut short
        query[: r.randrange(13, len(query))],  # a question cut short
        query_wire(MESH_NAME, qid=qid, flags=0x8100),  # a response (QR set)
        header[:4] + b"\0" * 8,  # no question
        header[:4] + struct.pack(">4H", 2, 0, 0, 0) + question,  # two announced, one there
        one + b"\xc0\x0c\x00\x01\x00\x01",  # a compression pointer to itself
        one + b"\x50" + b"a" * 80 + b"\x00\x00\x01\x00\x01",  # a label of type 01
        one + (b"\x3f" + b"b" * 63) * 5 + b"\x00\x00\x01\x00\x01",  # a name over 255 bytes
        query_wire(MESH_NAME, qid=qid, flags=0x2800),  # opcode UPDATE
        with_opt + b"\x00\x00\x29\x04\xd0\x00\x01\x00\x00\x00\x00",  # EDNS version 1
        with_opt + b"\x00\x00\x29\x04\xd0\x00\x00\x00\x00\xff\xff",  # OPT past the end
        query_wire("version.bind", 16, qid)[:-2] + b"\x00\x03",  # class CHAOS
        query + r.randbytes(20),  # bytes after the question
    ]
    return r.choice(packets)


# -- Tallies ---------------------------------------------------------------------------


@dataclass
class Tally:
    """What the attacks did: counters by attack, notes (maxima), and the moments of the
    attacks that come in bursts (to tell which one a slow answer followed)."""

    counts: dict[str, Counter[str]] = field(default_factory=dict)
    notes: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    """(trio time, what happened)."""

    def add(self, attack: str, what: str, n: int = 1) -> None:
        self.counts.setdefault(attack, Counter())[what] += n

    def most(self, attack: str, what: str, value: float) -> None:
        note = self.notes.setdefault(attack, {})
        note[what] = max(note.get(what, value), value)

    def event(self, what: str) -> None:
        self.events.append((trio.current_time(), what))

    def before(self, when: float, within: float = 3.0) -> list[str]:
        """The events of the ``within`` seconds before ``when``, latest first."""
        return [
            f"{what} {when - at:.1f} s before"
            for at, what in reversed(self.events)
            if 0 <= when - at <= within
        ]

    def report(self) -> dict[str, dict[str, Any]]:
        names = sorted(set(self.counts) | set(self.notes))
        return {a: {**dict(self.counts.get(a, {})), **self.notes.get(a, {})} for a in names}


@dataclass
class Watch:
    """The server process over the run: resident memory and open files, sampled."""

    pid: int
    rss: list[float] = field(default_factory=list)
    fds: list[int] = field(default_factory=list)
    died_at: float | None = None


# -- Sockets ---------------------------------------------------------------------------


async def connect(port: int, *, rcvbuf: int = 0) -> Sock:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    try:
        await sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


def reset(sock: Sock) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def send_all(sock: Sock, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[await sock.send(view) :]


def peek(sock: Sock) -> str:
    """Without waiting: "data" when a reply is there, "closed" when the server closed or
    reset the connection, "open" otherwise."""
    raw = socket.socket(fileno=sock.fileno())
    try:
        got = raw.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        return "data" if got else "closed"
    except BlockingIOError:
        return "open"
    except OSError:
        return "closed"
    finally:
        raw.detach()


async def http_get(port: int, path: str, timeout: float = 10.0) -> tuple[int, bytes]:
    """One request on its own connection: (status, body); status 0 when none came."""
    with trio.move_on_after(timeout):
        try:
            stream = await trio.open_tcp_stream("127.0.0.1", port)
        except OSError:
            return 0, b""
        async with stream:
            try:
                await stream.send_all(
                    f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode()
                )
                chunks = []
                while chunk := await stream.receive_some(65536):
                    chunks.append(chunk)
            except (OSError, trio.BrokenResourceError):
                return 0, b""
        response = b"".join(chunks)
        head, _, body = response.partition(b"\r\n\r\n")
        parts = head.split(b" ", 2)
        return (int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else 0), body
    return 0, b""


# -- Attacks ---------------------------------------------------------------------------


@dataclass
class Target:
    """The server under attack and how hard each attack goes."""

    port: int
    http: dict[str, int]
    """Each HTTP endpoint's port: health, ready, metrics, autoalloc."""
    proc: subprocess.Popen[bytes]
    budget: ConnectionBudget
    deadline: float
    """trio time when every attack stops."""
    query_rate: float
    """Queries (all types) and malformed packets a second, each."""
    reload_every: float
    rewrite_every: float
    mesh_dir: Path
    query_log: Path
    """The upstream's query log, where the loop probes show."""


def running(target: Target) -> bool:
    return trio.current_time() < target.deadline


async def resets(t: Target, tally: Tally, max_rounds: int = 5_000) -> None:
    """Clients that reset their connection idle, mid-query and while replies wait unread."""
    whole = frame(query_wire(MESH_NAME, qid=1))
    pipelined = b"".join(
        frame(query_wire(name, qid=i))
        for i, name in enumerate([MESH_NAME, "name5.bench.test"] * 50)
    )
    for _ in range(max_rounds):
        if not running(t):
            return
        try:
            reset(await connect(t.port))
            tally.add("resets", "idle")

            sock = await connect(t.port)
            with contextlib.suppress(OSError):
                await sock.send(whole[: len(whole) // 2])
            await trio.sleep(0.02)
            reset(sock)
            tally.add("resets", "mid_query")

            sock = await connect(t.port, rcvbuf=4096)
            try:
                with trio.move_on_after(2), contextlib.suppress(OSError):
                    await send_all(sock, pipelined)
                with trio.move_on_after(5):
                    await trio.lowlevel.wait_readable(sock)
                tally.add("resets", "mid_reply" if peek(sock) == "data" else "mid_reply_refused")
            finally:
                reset(sock)
        except OSError:
            tally.add("resets", "connect_failed")
        await trio.sleep(0.2)


async def budget_flood(t: Target, tally: Tally, hold: float = 8.0, max_rounds: int = 100) -> None:
    """More DNS and HTTP connections than the budget allows, each with a request, held."""
    paths = {"health": "/health", "ready": "/ready", "metrics": "/nothing", "autoalloc": "/"}
    endpoints = list(t.http.items())
    for _ in range(max_rounds):
        if not running(t):
            return
        held: list[Sock] = []
        tally.event("flood: connections opened")
        try:
            for i in range(t.budget.dns.limit + 32):
                try:
                    sock = await connect(t.port)
                except OSError:
                    tally.add("flood", "dns_connect_failed")
                    continue
                held.append(sock)
                with contextlib.suppress(OSError):
                    await sock.send(frame(query_wire(MESH_NAME, qid=i)))
            dns_count = len(held)
            for i in range(t.budget.http.limit + 16):
                name, port = endpoints[i % len(endpoints)]
                try:
                    sock = await connect(port)
                except OSError:
                    tally.add("flood", "http_connect_failed")
                    continue
                held.append(sock)
                with contextlib.suppress(OSError):
                    await sock.send(f"GET {paths[name]} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            await trio.sleep(max(1.0, min(hold, t.deadline - trio.current_time())))
            for i, sock in enumerate(held):
                kind = "dns" if i < dns_count else "http"
                state = peek(sock)
                tally.add("flood", f"{kind}_served" if state == "data" else f"{kind}_{state}")
            tally.add("flood", "rounds")
        finally:
            for sock in held:
                sock.close()
        await trio.sleep(1.0)


async def pipeliner(t: Target, tally: Tally, max_queries: int = 200_000) -> None:
    """One client after another sends pipelined queries and never reads a reply."""
    batch = b"".join(frame(query_wire(MESH_NAME, qid=i)) for i in range(1000))
    size = len(batch) // 1000
    while running(t):
        try:
            sock = await connect(t.port, rcvbuf=4096)
        except OSError:
            tally.add("pipeline", "connect_failed")
            await trio.sleep(1)
            continue
        sent, closed = 0, False
        try:
            with trio.move_on_at(t.deadline):
                while sent < max_queries:
                    with trio.move_on_after(10) as stuck:
                        try:
                            sent += await sock.send(batch) // size
                        except OSError:
                            closed = True
                            break
                    if stuck.cancelled_caught:
                        break
                if not closed:
                    closed = await closed_by_server(sock, timeout=15)
        finally:
            sock.close()
        tally.add("pipeline", "clients")
        tally.event("pipeline: a client closed")
        tally.add("pipeline", "queries_sent", sent)
        tally.add("pipeline", "closed_by_server" if closed else "not_closed")
        await trio.sleep(0.5)


async def trickle(t: Target, tally: Tally, port: int, data: bytes, every: float, what: str) -> None:
    """A client after another that sends ``data`` a byte every ``every`` seconds."""
    while running(t):
        try:
            sock = await connect(port)
        except OSError:
            tally.add("slowloris", f"{what}_connect_failed")
            await trio.sleep(1)
            continue
        sent = 0
        with sock:
            with trio.move_on_at(t.deadline):
                with contextlib.suppress(OSError):
                    for byte in data:
                        await sock.send(bytes([byte]))
                        sent += 1
                        await trio.sleep(every)
            if sent < len(data) and running(t):
                tally.add("slowloris", f"{what}_cut_off")
            elif sent == len(data):
                tally.add("slowloris", f"{what}_completed")
        tally.add("slowloris", f"{what}_bytes", sent)


async def slowloris(t: Target, tally: Tally) -> None:
    dns_query = frame(query_wire(MESH_NAME, qid=7))
    head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Padding: " + b"p" * 40 + b"\r\n\r\n"
    async with trio.open_nursery() as nursery:
        for _ in range(8):
            nursery.start_soon(trickle, t, tally, t.port, dns_query, 0.5, "dns")
        for _ in range(4):
            nursery.start_soon(trickle, t, tally, t.http["health"], head, 1.0, "http")


async def all_types(t: Target, tally: Tally) -> None:
    """A query of every type, 0 to 65535, at ``query_rate``, 64 at most waiting."""
    others = sorted(set(range(65536)) - set(SPECIAL_TYPES))
    random.Random(3).shuffle(others)
    window = trio.Semaphore(64)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(("127.0.0.1", t.port))

        async def read() -> None:
            while True:
                data = await sock.recv(65535)
                tally.add("types", f"rcode_{rcode_of(data)}")
                with contextlib.suppress(ValueError):
                    window.release()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            start = trio.current_time()
            for sent, qtype in enumerate([*SPECIAL_TYPES, *others]):
                if not running(t):
                    break
                with trio.move_on_after(2):
                    await window.acquire()
                await trio.sleep_until(start + sent / t.query_rate)
                with contextlib.suppress(OSError):
                    await sock.send(query_wire(f"t{qtype}.types.miss.bench.test", qtype, qtype))
                tally.add("types", "sent")
            await trio.sleep(2)  # the last replies
            nursery.cancel_scope.cancel()


async def scrapes(t: Target, tally: Tally, every: float = 2.0) -> None:
    """The metrics endpoint, every ``every`` seconds: its size and the request rows."""
    while running(t):
        start = time.monotonic()
        status, body = await http_get(t.http["metrics"], "/metrics")
        if status == 200:
            text = body.decode(errors="replace")
            tally.add("scrapes", "ok")
            tally.most("scrapes", "max_bytes", len(body))
            tally.most("scrapes", "max_seconds", round(time.monotonic() - start, 3))
            rows = sum(1 for line in text.splitlines() if line.startswith("coredns_dns_requests_"))
            tally.most("scrapes", "max_request_rows", rows)
        else:
            tally.add("scrapes", "refused_or_failed")
        await trio.sleep(every)


async def loop_probes(t: Target, tally: Tally) -> None:
    """Replays of the loop probes the server sends (read from the upstream's query log),
    three times each at once, and of random probe-shaped names."""
    seen: set[str] = set()
    pattern = re.compile(r"query\[HINFO\] (\d+\.\d+\S*) from")
    rng = random.Random(1)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(("127.0.0.1", t.port))

        async def read() -> None:
            while True:
                tally.add("loop_probes", f"rcode_{rcode_of(await sock.recv(65535))}")

        async def replay(name: str) -> None:
            for _ in range(3):
                await sock.send(query_wire(name, 13, rng.getrandbits(16)))  # HINFO
                tally.add("loop_probes", "sent")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            offset = 0
            while running(t):
                with open(t.query_log, "rb") as f:
                    f.seek(offset)
                    chunk = f.read(4 << 20)
                cut = chunk.rfind(b"\n") + 1
                offset += cut
                for name in pattern.findall(chunk[:cut].decode(errors="replace")):
                    if name not in seen and len(seen) < 10_000:
                        seen.add(name)
                        tally.add("loop_probes", "probe_names_seen")
                        await replay(name)
                shaped = f"{rng.getrandbits(62)}.{rng.getrandbits(62)}"
                seen.add(shaped)  # the upstream logs it too: not one of the server's probes
                await replay(shaped + ".")
                tally.add("loop_probes", "shaped_names")
                await trio.sleep(0.25)
            await trio.sleep(1)
            nursery.cancel_scope.cancel()


async def malformed(t: Target, tally: Tally) -> None:
    """Malformed datagrams at ``query_rate``, and a malformed TCP stream every second."""
    rng = random.Random(2)
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(("127.0.0.1", t.port))

        async def read() -> None:
            while True:
                tally.add("malformed", f"udp_rcode_{rcode_of(await sock.recv(65535))}")

        async def tcp() -> None:
            streams = [
                lambda: b"\x00\x00",  # an empty message
                lambda: b"\x01\x00" + rng.randbytes(40),  # a length the bytes never reach
                lambda: frame(rng.randbytes(rng.randrange(1, 300))),  # garbage, framed
                lambda: frame(malformed_packet(rng)),
            ]
            while running(t):
                try:
                    conn = await connect(t.port)
                except OSError:
                    tally.add("malformed", "tcp_connect_failed")
                    await trio.sleep(1)
                    continue
                with conn:
                    with contextlib.suppress(OSError):
                        await conn.send(rng.choice(streams)())
                    tally.add("malformed", "tcp_sent")
                    if await closed_by_server(conn, timeout=5):
                        tally.add("malformed", "tcp_closed_by_server")
                await trio.sleep(1)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            nursery.start_soon(tcp)
            start, sent = trio.current_time(), 0
            while running(t) and sent < 10_000_000:
                await trio.sleep_until(start + sent / t.query_rate)
                with contextlib.suppress(OSError):
                    await sock.send(malformed_packet(rng))
                sent += 1
                tally.add("malformed", "udp_sent")
            await trio.sleep(1)
            nursery.cancel_scope.cancel()


def entries_yaml(turn: int) -> str:
    """Good content: Istio ServiceEntries without addresses (autoalloc gives each a pair)."""
    docs = [
        {
            "apiVersion": "networking.istio.io/v1",
            "kind": "ServiceEntry",
            "metadata": {
                "name": f"ext{n}",
                "namespace": "ns1",
                "creationTimestamp": "2024-01-01T00:00:00Z",
            },
            "spec": {
                "hosts": [f"api{n}.partner{turn % 4}.example"],
                "ports": [{"number": 443, "name": "https", "protocol": "TLS"}],
                "resolution": "DNS",
            },
        }
        for n in range(20)
    ]
    return str(yaml.safe_dump_all(docs))


def alias_bomb() -> str:
    levels = [f"x0: &a [{', '.join(['{kind: Pod}'] * 9)}]"]
    levels += [
        f"x{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]"
        for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
    ]
    return "\n".join(["kind: List", "apiVersion: v1", *levels, "items: *i", ""])


DAMAGED: dict[str, Callable[[int], str]] = {
    "bad_date": lambda turn: entries_yaml(turn) + "---\nupdated: 2024-02-30\n",
    "alias_bomb": lambda turn: alias_bomb(),
    "oversized": lambda turn: entries_yaml(turn) + "#" + "x" * (MAX_FILE_SIZE + 1024) + "\n",
}


async def mesh_rewrites(t: Target, tally: Tally) -> None:
    """The mesh directory's second file rewritten (atomically) damaged, good, damaged, ..."""
    path, tmp = t.mesh_dir / "entries.yaml", t.mesh_dir / ".entries.yaml.tmp"
    kinds = list(DAMAGED)
    turn = 0
    while running(t) and turn < 100_000:
        if turn % 2:
            kind, text = "good", entries_yaml(turn)
        else:
            kind = kinds[(turn // 2) % len(kinds)]
            text = DAMAGED[kind](turn)
        await trio.to_thread.run_sync(tmp.write_text, text)
        os.replace(tmp, path)
        tally.add("mesh_file", kind)
        tally.event(f"mesh file: {kind}")
        turn += 1
        await trio.sleep(t.rewrite_every)
    path.write_text(entries_yaml(turn))  # good at the end, so the table is whole again


async def reloads(t: Target, tally: Tally) -> None:
    await trio.sleep(t.reload_every / 2)
    while running(t) and t.proc.poll() is None:
        t.proc.send_signal(signal.SIGUSR1)
        tally.add("sigusr1", "sent")
        tally.event("SIGUSR1")
        await trio.sleep(t.reload_every)


@dataclass
class Canary:
    """A legitimate client of our own: a mesh name every 50 ms, each answer timed."""

    rtts: list[tuple[float, float | None]] = field(default_factory=list)
    """(trio time sent, seconds to the answer; None: none within 3 s)."""

    async def run(self, t: Target) -> None:
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            await sock.connect(("127.0.0.1", t.port))
            for qid in range(1_000_000):
                if not running(t):
                    return
                wire = query_wire(MESH_NAME, qid=qid & 0xFFFF)
                sent = trio.current_time()
                await sock.send(wire)
                rtt = None
                with trio.move_on_after(3):
                    while (await sock.recv(65535))[:2] != wire[:2]:
                        pass
                    rtt = trio.current_time() - sent
                self.rtts.append((sent, rtt))
                await trio.sleep(0.05)

    def report(self, tally: Tally, start: float) -> dict[str, Any]:
        answered = sorted(rtt for _, rtt in self.rtts if rtt is not None)
        slowest = sorted(self.rtts, key=lambda s: math.inf if s[1] is None else s[1])[-5:]
        return {
            "sent": len(self.rtts),
            "unanswered": len(self.rtts) - len(answered),
            "p99_ms": round(answered[int(len(answered) * 0.99)] * 1e3, 1) if answered else 0,
            "slowest": [
                {
                    "at_s": round(sent - start, 2),
                    "ms": None if rtt is None else round(rtt * 1e3, 1),
                    "after": tally.before(sent),
                }
                for sent, rtt in reversed(slowest)
            ],
        }


async def watch(t: Target, w: Watch) -> None:
    while trio.current_time() < t.deadline + 5:
        if t.proc.poll() is not None:
            w.died_at = w.died_at or time.monotonic()
            return
        with contextlib.suppress(OSError):
            w.rss.append(rss_mb(w.pid))
            w.fds.append(open_fds(w.pid))
        await trio.sleep(0.5)


# -- The run ---------------------------------------------------------------------------


def loadavg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


async def attack(
    t: Target,
    tally: Tally,
    w: Watch,
    canary: Canary,
    legit: Callable[[], DnsperfRun],
    chosen: list[str],
) -> DnsperfRun:
    """The legitimate load and the ``chosen`` attacks side by side; dnsperf's figures."""
    result: list[DnsperfRun] = []

    async def legit_load() -> None:
        result.append(await trio.to_thread.run_sync(legit))

    async def bounded(what: Callable[[], Awaitable[None]]) -> None:
        with trio.move_on_at(t.deadline + 20):
            await what()

    jobs: dict[str, Callable[[], Awaitable[None]]] = {
        "resets": lambda: resets(t, tally),
        "flood": lambda: budget_flood(t, tally),
        "pipeline": lambda: pipeliner(t, tally),
        "slowloris": lambda: slowloris(t, tally),
        "types": lambda: all_types(t, tally),
        "scrapes": lambda: scrapes(t, tally),
        "loop_probes": lambda: loop_probes(t, tally),
        "malformed": lambda: malformed(t, tally),
        "mesh_file": lambda: mesh_rewrites(t, tally),
        "sigusr1": lambda: reloads(t, tally),
    }
    async with trio.open_nursery() as nursery:
        nursery.start_soon(legit_load)
        nursery.start_soon(watch, t, w)
        nursery.start_soon(canary.run, t)
        for name in chosen:
            nursery.start_soon(bounded, jobs[name])
    return result[0]


def after_the_run(port: int, http: dict[str, int]) -> dict[str, Any]:
    """What the server says once the attacks are over."""
    import dns.message
    import dns.query

    tcp = False
    with contextlib.suppress(Exception):
        reply = dns.query.tcp(
            dns.message.make_query(MESH_NAME, "A"), "127.0.0.1", port=port, timeout=5
        )
        tcp = bool(reply.answer)

    async def endpoints() -> tuple[int, str]:
        health, _ = await http_get(http["health"], "/health")
        status, body = await http_get(http["metrics"], "/metrics")
        return health, body.decode(errors="replace") if status == 200 else ""

    health, metrics = trio.run(endpoints)
    return {
        "answers_udp": still_answers(port),
        "answers_tcp": tcp,
        "health_status": health,
        "request_rows": sum(
            1 for line in metrics.splitlines() if line.startswith("coredns_dns_requests_total")
        ),
    }


def server_log(path: Path) -> dict[str, Any]:
    text = path.read_text(errors="replace")
    lines = text.splitlines()
    errors = Counter(
        re.sub(r"\d+", "N", line.split(": ", 2)[-1])[:90]
        for line in lines
        if line.startswith("[ERROR]") and "plugin/errors" not in line
    )
    return {
        "reloads_completed": sum("Reloading complete" in line for line in lines),
        "reloads_refused": sum(line.startswith("[ERROR] SIGUSR1:") for line in lines),
        "mesh_loads_refused": sum("the last good table keeps serving" in line for line in lines),
        "tracebacks": text.count("Traceback"),
        "error_lines": sum(line.startswith("[ERROR]") for line in lines),
        "top_errors": dict(errors.most_common(6)),
        "loop_detected": any("Loop (" in line for line in lines),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load_before = loadavg()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))
    os.sched_setaffinity(0, {int(CLIENT_CORE)})
    budget = ConnectionBudget.of(file_limit=args.file_limit)
    with contextlib.ExitStack() as stack:
        if args.workdir:
            args.workdir.mkdir(parents=True, exist_ok=True)
            tmp = str(args.workdir)
        else:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="pycorefile-attack-"))
        data = Data(Path(tmp))
        mesh_dir = data.dir / "mesh"
        mesh_dir.mkdir()
        (mesh_dir / "nametable.json").write_bytes(data.mesh_table.read_bytes())
        (mesh_dir / "entries.yaml").write_text(entries_yaml(0))
        (data.dir / "alloc").mkdir()
        queries = legit_queries(data)
        query_log = data.dir / "upstream-queries.log"
        log_path = data.dir / "server.log"
        with upstream(data, query_log=query_log) as up, open(log_path, "wb") as log:
            port = free_port()
            http = {name: free_port() for name in ("health", "ready", "metrics", "autoalloc")}
            text = corefile(port, http, up.port, mesh_dir, data.dir / "alloc" / "state.json")
            with pycorefile_process(
                data.dir / "Corefile", text, output=log, preexec_fn=file_limit(args.file_limit)
            ) as proc:
                wait_answering(port, MESH_NAME, timeout=60)
                dnsperf(port, queries, min(2, args.probe), clients=4, outstanding=500)  # warm up
                saturated = dnsperf(port, queries, args.probe, clients=4, outstanding=500)
                rate = saturated.qps * args.share
                w = Watch(proc.pid, rss=[rss_mb(proc.pid)], fds=[open_fds(proc.pid)])
                tally = Tally()
                canary = Canary()
                started: list[float] = []

                def legit() -> DnsperfRun:
                    return dnsperf(
                        port, queries, args.duration, clients=4, outstanding=500, qps=rate,
                        verbose=True,
                    )  # fmt: skip

                async def main() -> DnsperfRun:
                    t = Target(
                        port, http, proc, budget, trio.current_time() + args.duration,
                        query_rate=saturated.qps * args.attack_share,
                        reload_every=args.reload_every, rewrite_every=args.rewrite_every,
                        mesh_dir=mesh_dir, query_log=query_log,
                    )  # fmt: skip
                    started.append(trio.current_time())
                    return await attack(t, tally, w, canary, legit, args.attacks)

                load = trio.run(main)
                alive = proc.poll() is None
                after = after_the_run(port, http) if alive else {}
                end_rss = rss_mb(proc.pid) if alive else 0.0
            clean_exit = proc.returncode == 0
        log_facts = server_log(log_path)
    p50, p99, worst = load.quantiles()
    failed = sum(n for rcode, n in load.rcodes.items() if rcode not in ("NOERROR", "NXDOMAIN"))
    answering = bool(after.get("answers_udp") and after.get("answers_tcp"))
    ok = alive and answering and load.lost == 0 and failed == 0
    return {
        "duration_s": args.duration,
        "share": args.share,
        "attack_rate_qps": round(saturated.qps * args.attack_share),
        "load_average": {"before": load_before, "after": loadavg()},
        "file_limit": args.file_limit,
        "budget": {"dns": budget.dns.limit, "http": budget.http.limit},
        "saturation_qps": round(saturated.qps),
        "legit": {
            "rate_qps": round(rate),
            "sent": load.sent,
            "answered": load.completed,
            "lost": load.lost,
            "failed": failed,
            "rcodes": load.rcodes,
            "p50_ms": round(p50 * 1e3, 2),
            "p99_ms": round(p99 * 1e3, 2),
            "max_ms": round(worst * 1e3, 1),
        },
        "server": {
            "alive": alive,
            "answering": answering,
            "clean_exit_on_sigterm": clean_exit,
            "rss_mb": {
                "start": round(w.rss[0], 1),
                "peak": round(max(w.rss), 1),
                "end": round(end_rss, 1),
            },
            "open_fds_peak": max(w.fds),
            **after,
            **log_facts,
        },
        "attacks_run": args.attacks,
        "attacks": tally.report(),
        "canary": canary.report(tally, started[0]),
        "verdict": "pass" if ok else "FAIL",
    }


def summary(r: dict[str, Any]) -> str:
    """The figures as a Markdown list."""
    legit, server, attacks, canary = r["legit"], r["server"], r["attacks"], r["canary"]
    lines = [
        f"- Run: {r['duration_s']:g} s, open-file limit {r['file_limit']} (budget "
        f"{r['budget']['dns']} DNS + {r['budget']['http']} HTTP connections); load average "
        f"{r['load_average']['before']} before, {r['load_average']['after']} after.",
        f"- Legitimate load: {legit['rate_qps']:,} qps ({r['share']:.0%} of "
        f"{r['saturation_qps']:,} qps at saturation): {legit['sent']:,} sent, "
        f"{legit['answered']:,} answered, **{legit['lost']:,} lost**, {legit['failed']:,} "
        f"failed; latency p50 {legit['p50_ms']} ms, p99 {legit['p99_ms']} ms, "
        f"max {legit['max_ms']} ms.",
        f"- Server: RSS {server['rss_mb']['start']} MB at start, {server['rss_mb']['peak']} MB "
        f"peak, {server['rss_mb']['end']} MB at the end; open files peak "
        f"{server['open_fds_peak']}; alive {server['alive']}, answering UDP and TCP "
        f"{server['answering']}, clean exit on SIGTERM {server['clean_exit_on_sigterm']}; "
        f"{server['reloads_completed']} reloads completed, {server['reloads_refused']} refused, "
        f"{server['mesh_loads_refused']} mesh loads refused; {server['tracebacks']} tracebacks.",
        f"- Attacks (all-types queries and malformed packets at {r['attack_rate_qps']:,} a "
        f"second each):",
    ]
    for name, counts in attacks.items():
        lines.append(f"  - {name}: " + ", ".join(f"{k} {v:,}" for k, v in sorted(counts.items())))
    lines.append(
        f"- Canary (a mesh name every 50 ms): {canary['sent']:,} sent, "
        f"{canary['unanswered']} unanswered within 3 s, p99 {canary['p99_ms']} ms; slowest:"
    )
    for slow in canary["slowest"]:
        after = "; ".join(slow["after"]) or "no burst attack in the 3 s before"
        lines.append(f"  - {slow['ms']} ms at {slow['at_s']} s ({after})")
    lines.append(f"- Verdict: **{r['verdict']}**.")
    return "\n".join(lines)


def attack_names(text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = set(names) - set(ATTACKS)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown attacks: {', '.join(sorted(unknown))}")
    return names


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-d", "--duration", type=float, default=60.0, help="seconds of attack")
    parser.add_argument("--probe", type=float, default=5.0, help="seconds to measure saturation")
    parser.add_argument("--share", type=float, default=LEGIT_SHARE, help="legitimate rate share")
    parser.add_argument("--file-limit", type=int, default=1024)
    parser.add_argument("--reload-every", type=float, default=5.0, help="seconds between SIGUSR1")
    parser.add_argument(
        "--rewrite-every", type=float, default=2.0, help="seconds between mesh file rewrites"
    )
    parser.add_argument(
        "--attack-share",
        type=float,
        default=ATTACK_SHARE,
        help="all-types queries and malformed packets a second, each, as a share of saturation",
    )
    parser.add_argument(
        "--attacks",
        type=attack_names,
        default=list(ATTACKS),
        help=f"comma-separated, of {','.join(ATTACKS)} (default all)",
    )
    parser.add_argument(
        "--workdir", type=Path, help="keep the files (server log, upstream log) in this directory"
    )
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--write", action="store_true", help="record in docs/reliability.md")
    args = parser.parse_args()
    report = run(args)
    print(json.dumps(report, indent=2) if args.json else summary(report))
    if args.write:
        stamp = time.strftime("%Y-%m-%d")
        command = f"python bench/attack_soak.py -d {args.duration:g} --write"
        body = f"{summary(report)}\n\n({stamp}, `{command}`)"
        doc = ROOT / "docs" / "reliability.md"
        write_between_markers(doc, "attack-soak", body, "Soak under attack")
    return 0 if report["verdict"] == "pass" else 1


if __name__ == "__main__":
    raise SystemExit(main())
