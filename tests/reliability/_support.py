"""What the fault and limit tests share: the sidecar Corefile, a mesh table, probes.

Every test runs the sidecar chain a workload's proxy runs (``log``, ``errors``,
``cache``, ``meshhosts`` with ``fallthrough``, ``forward``) against test
upstreams on loopback, breaks one thing, and checks with ``keeps_serving``
that what the server can answer is still answered.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import dns.exception
import dns.message
import dns.rcode
import dns.rdatatype
import trio
import yaml

from pycorefile import Server
from pycorefile.testing import Upstream, make_query, query
from pycorefile_plugins.meshhosts import MeshHostsPlugin
from tests.process import ServerProcess

NOERROR, NXDOMAIN, SERVFAIL, REFUSED = (
    dns.rcode.NOERROR,
    dns.rcode.NXDOMAIN,
    dns.rcode.SERVFAIL,
    dns.rcode.REFUSED,
)
PROTOS = ("udp", "tcp")

MESH = {
    "web.shop.svc.cluster.local": "10.96.0.10",
    "cart.shop.svc.cluster.local": "10.96.0.11",
    "db.data.svc.cluster.local": "10.96.0.12",
}
"""The mesh table every test starts with: host → its one IPv4 address."""

EXTERNAL = {
    "cached.example": "192.0.2.1",
    "fresh.example": "192.0.2.2",
    "later.example": "192.0.2.3",
}
"""Names only the upstream knows: the first is cached before the fault, the others after."""

Target = Server | tuple[str, int]

ALIAS_BOMB = "\n".join(
    [
        "kind: List",
        "apiVersion: v1",
        f"x0: &a [{', '.join(['{kind: Pod}'] * 9)}]",
        *(
            f"x{name}: &{name} [{', '.join([f'*{prev}'] * 9)}]"
            for prev, name in zip("abcdefgh", "bcdefghi", strict=True)
        ),
        "items: *i",
        "",
    ]
)
"""A YAML alias bomb of about 500 bytes: a List of 9^9 objects (every one a Pod, which
meshhosts skips), nine aliases to nine aliases to ... Walking its items pins a core for
hours; it must be refused before anything is expanded."""


def upstream_records(names: Mapping[str, str] = EXTERNAL) -> dict[tuple[str, str], list[str]]:
    """``Upstream`` records (A) for ``names``."""
    return {(f"{name}.", "A"): [address] for name, address in names.items()}


def write_mesh(path: Path, hosts: Mapping[str, str], version: int = 1) -> None:
    """A NameTable of Kubernetes services, written at once and stamped ``version`` seconds.

    The explicit modification time makes every version visibly newer to the
    reload loop, however fast the writes follow each other.
    """
    path.write_text(mesh_text(hosts))
    stamp(path, version)


def mesh_text(hosts: Mapping[str, str]) -> str:
    table = {}
    for host, address in hosts.items():
        short, namespace = host.split(".")[:2]
        table[host] = {
            "ips": [address],
            "registry": "Kubernetes",
            "shortname": short,
            "namespace": namespace,
        }
    return json.dumps({"table": table}, indent=2) + "\n"


def service_entry(name: str, host: str, created: str) -> dict[str, Any]:
    """An Istio ServiceEntry without addresses: autoalloc gives its host a pair."""
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": name, "namespace": "shop", "creationTimestamp": created},
        "spec": {
            "hosts": [host],
            "ports": [{"number": 5432, "name": "tcp", "protocol": "TCP"}],
            "resolution": "DNS",
        },
    }


ENTRIES = [
    service_entry("pg", "pg.partner.example", "2024-01-01T00:00:00Z"),
    service_entry("redis", "redis.partner.example", "2024-01-02T00:00:00Z"),
]
OLDER = service_entry("kafka", "kafka.partner.example", "2023-06-01T00:00:00Z")
"""Created before the others: without the state, it would take the first pair."""


def write_entries(path: Path, docs: list[dict[str, Any]]) -> None:
    """Replace the manifests file atomically with ``docs``."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump_all(docs))
    os.replace(tmp, path)


def autoalloc_block(state: Path) -> str:
    """An autoalloc block keeping its state in ``state``, its HTTP on any free port."""
    return (
        f"    autoalloc {{\n        assign sequential\n        state {state}\n"
        "        http 127.0.0.1:0\n    }\n"
    )


async def until_answering(
    target: tuple[str, int], name: str, proc: ServerProcess
) -> dns.message.Message:
    """Poll a server that is starting until it answers ``name``."""
    with trio.move_on_after(20):
        while True:
            with contextlib.suppress(dns.exception.Timeout, ConnectionRefusedError):
                reply = await query(target, name, "A", timeout=0.3)
                if reply.rcode() == NOERROR and reply.answer:
                    return reply
            await trio.sleep(0.05)
    output = "\n".join(await trio.to_thread.run_sync(proc.drain))
    raise AssertionError(f"the server never answered {name}; its output:\n{output}")


def stamp(path: Path, version: int) -> None:
    """Set the file's modification time to ``version`` seconds after a fixed day."""
    seconds = 1_700_000_000 + version
    os.utime(path, ns=(seconds * 10**9, seconds * 10**9))


def sidecar(
    mesh: Path | str | None,
    upstreams: Iterable[str],
    *,
    forward: str = "",
    meshhosts: str = "reload 50ms",
    cache: str = "",
    extra: str = "",
    zone: str = ".:0",
) -> str:
    """The sidecar Corefile: log, errors, cache, meshhosts (fallthrough), forward."""
    mesh_block = (
        f"    meshhosts {{\n        file {mesh}\n        {meshhosts}\n        fallthrough\n    }}\n"
        if mesh is not None
        else ""
    )
    cache_line = f"    cache {{\n        {cache}\n    }}\n" if cache else "    cache\n"
    forward_block = f" {{\n        {forward}\n    }}" if forward else ""
    return (
        f"{zone} {{\n"
        "    bind 127.0.0.1\n"
        "    log\n"
        "    errors\n"
        f"{cache_line}"
        f"{mesh_block}"
        f"    forward . {' '.join(upstreams)}{forward_block}\n"
        f"{extra}"
        "}\n"
    )


def mesh_plugin(server: Server) -> MeshHostsPlugin:
    assert server.config is not None
    (plugin,) = server.config.find("meshhosts")
    assert isinstance(plugin, MeshHostsPlugin)
    return plugin


def addresses(reply: dns.message.Message) -> list[str]:
    """The A and AAAA addresses of the answer section, sorted."""
    return sorted(
        rd.to_text()
        for rrset in reply.answer
        if rrset.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
        for rd in rrset
    )


def rcode_text(reply: dns.message.Message) -> str:
    return dns.rcode.to_text(reply.rcode())


async def answered(
    target: Target, name: str, address: str, *, rdtype: str = "A", proto: str = "udp"
) -> None:
    """Assert ``name`` is answered NOERROR with exactly ``address``."""
    reply = await query(target, name, rdtype, proto=proto)
    assert reply.rcode() == NOERROR, f"{name} {proto}: {rcode_text(reply)}"
    assert addresses(reply) == [address], f"{name} {proto}: {reply.answer}"


async def servfail(target: Target, name: str, *, proto: str = "udp") -> None:
    """Assert ``name`` gets SERVFAIL: never NXDOMAIN, never an answer."""
    reply = await query(target, name, "A", proto=proto, timeout=10)
    assert reply.rcode() == SERVFAIL, f"{name} {proto}: {rcode_text(reply)}"
    assert not reply.answer


async def keeps_serving(
    target: Target,
    mesh: Mapping[str, str] = MESH,
    cached: Mapping[str, str] | None = None,
) -> None:
    """Every mesh host and every cached name still answered, over UDP and TCP."""
    cached = {"cached.example": EXTERNAL["cached.example"]} if cached is None else cached
    for proto in PROTOS:
        for name, address in {**mesh, **cached}.items():
            await answered(target, name, address, proto=proto)


async def wait_until(what: str, check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll the async ``check()`` every 20 ms until it is true; fail after ``timeout``."""
    with trio.move_on_after(timeout):
        while not await check():
            await trio.sleep(0.02)
        return
    raise AssertionError(f"timed out after {timeout:g}s waiting until {what}")


async def rcode_or_timeout(target: Target, name: str, timeout: float) -> int | None:
    """The reply's rcode, or None when none came within ``timeout`` (the client gave up)."""
    try:
        return (await query(target, name, "A", timeout=timeout)).rcode()
    except dns.exception.Timeout:
        return None


# -- A TCP upstream that hangs up in the middle of a reply ----------------------------------


class CuttingUpstream:
    """A DNS-over-TCP upstream that, while ``cut`` is set, sends the 2-byte length and
    half of the reply, then closes the connection: a server crashing mid-write.

    Replies are made by a ``pycorefile.testing.Upstream`` (not started: only its
    answering logic is used), so records and NXDOMAIN work as there.
    """

    def __init__(self, records: Mapping[tuple[str, str], list[str]]) -> None:
        self.brain = Upstream(records=dict(records))
        self.cut = False
        self.cut_names: list[str] = []
        """The question of every reply cut short, in order."""
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[CuttingUpstream]:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trio.serve_listeners, self._connection, listeners)
            try:
                yield self
            finally:
                nursery.cancel_scope.cancel()

    async def _connection(self, stream: trio.SocketStream) -> None:
        async with stream:
            buf = b""
            while True:
                try:
                    chunk = await stream.receive_some(65535)
                except trio.BrokenResourceError:
                    return
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack(">H", buf[:2])[0]:
                    size = struct.unpack(">H", buf[:2])[0]
                    wire, buf = buf[2 : 2 + size], buf[2 + size :]
                    reply = self.brain.respond(wire, "tcp")
                    if reply is None:
                        continue
                    framed = struct.pack(">H", len(reply)) + reply
                    try:
                        if self.cut:
                            self.cut_names.append(self.brain.queries[-1][0])
                            await stream.send_all(framed[: 2 + len(reply) // 2])
                            return  # hang up mid-reply
                        await stream.send_all(framed)
                    except trio.BrokenResourceError:
                        return


# -- A UDP upstream that holds its replies until told ----------------------------------------


async def burst(
    target: tuple[str, int], names: list[str], *, window: int = 64, timeout: float = 20.0
) -> dict[int, int]:
    """Ask every name over UDP with ``window`` queries outstanding; count replies by rcode.

    Lost queries are counted under the key -1. Bounded by ``timeout`` overall.
    """
    counts: dict[int, int] = {}
    queue = list(reversed(names))
    pending: dict[int, str] = {}
    next_id = 0
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.connect(target)
        with trio.move_on_after(timeout):
            while queue or pending:
                while queue and len(pending) < window:
                    name = queue.pop()
                    next_id = (next_id + 1) & 0xFFFF
                    q = make_query(name, "A")
                    q.id = next_id
                    pending[next_id] = name
                    await sock.send(q.to_wire())
                with trio.move_on_after(3) as quiet:
                    data = await sock.recv(65535)
                if quiet.cancelled_caught:
                    break  # nothing for 3 s: what is pending is lost
                qid = (data[0] << 8) | data[1]
                if pending.pop(qid, None) is not None:
                    rcode = data[3] & 0x0F
                    counts[rcode] = counts.get(rcode, 0) + 1
    lost = len(pending) + len(queue)
    if lost:
        counts[-1] = lost
    return counts


def rss_kib(pid: int) -> int:
    """Resident memory of a process (VmRSS), in KiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for process {pid}")
