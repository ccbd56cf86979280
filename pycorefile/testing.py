"""Helpers for testing plugins against the real server over real sockets.

``serve`` runs a Corefile in-process on a free loopback port; ``query`` asks it
over UDP or TCP with dnspython; ``Upstream`` is a small authoritative server on
127.0.0.x that counts what it is asked and can misbehave on purpose (silent,
slow, garbage, wrong ID, oversize), to stand in for real upstreams.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import dns.asyncbackend
import dns.asyncquery
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import trio
from dns._asyncbackend import Backend

from ._app import open_server
from ._server import Server

__all__ = ["Upstream", "make_query", "query", "serve"]

serve = open_server


def make_query(
    name: str,
    rdtype: str | int = "A",
    *,
    edns: bool | int = False,
    payload: int = 1232,
    do: bool = False,
    cd: bool = False,
    rd: bool = True,
) -> dns.message.Message:
    """A query as a stub resolver sends it (RD set, no EDNS unless asked)."""
    if edns is False and not do:
        q = dns.message.make_query(name, _rdtype(rdtype), use_edns=False)
    else:
        version = 0 if edns is True or edns is False else edns
        q = dns.message.make_query(
            name, _rdtype(rdtype), use_edns=version, payload=payload, want_dnssec=do
        )
    if cd:
        q.flags |= dns.flags.CD
    if not rd:
        q.flags &= ~dns.flags.RD
    return q


def _rdtype(rdtype: str | int) -> dns.rdatatype.RdataType:
    if isinstance(rdtype, str):
        return dns.rdatatype.from_text(rdtype)
    return dns.rdatatype.RdataType.make(rdtype)


def _backend() -> Backend:
    return dns.asyncbackend.get_backend("trio")


async def query(
    target: Server | tuple[str, int],
    name: str | dns.message.Message,
    rdtype: str | int = "A",
    *,
    proto: str = "udp",
    timeout: float = 3.0,
    **kwargs: object,
) -> dns.message.Message:
    """Ask the server (or an address) over ``udp`` or ``tcp`` and return the reply."""
    host, port = _address(target)
    q = name if isinstance(name, dns.message.Message) else make_query(name, rdtype, **kwargs)  # type: ignore[arg-type]
    if proto == "tcp":
        return await dns.asyncquery.tcp(q, host, timeout=timeout, port=port, backend=_backend())
    return await dns.asyncquery.udp(q, host, timeout=timeout, port=port, backend=_backend())


async def query_wire(
    target: Server | tuple[str, int], wire: bytes, *, timeout: float = 3.0
) -> bytes | None:
    """Send raw bytes over UDP; the raw reply, or None when none came in time."""
    host, port = _address(target)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock:
        await sock.connect((host, port))
        await sock.send(wire)
        with trio.move_on_after(timeout):
            return await sock.recv(65535)
    return None


def _address(target: Server | tuple[str, int]) -> tuple[str, int]:
    if isinstance(target, Server):
        for proto, host, port in target.addresses:
            if proto == "udp":
                return ("127.0.0.1" if host == "0.0.0.0" else host, port)
        raise RuntimeError("server has no UDP listener")
    return target


Records = dict[tuple[str, str], list[str]]
"""``{(name, type): [rdata text, ...]}``, e.g. ``{("a.example.", "A"): ["192.0.2.1"]}``."""


@dataclass
class Upstream:
    """A test name server on a loopback address, UDP and TCP on one port.

    ``mode`` decides how it behaves: ``answer`` (from ``records``; NXDOMAIN
    with an SOA for unknown names), ``silent`` (never replies), ``garbage``
    (random bytes), ``wrong_id`` (a reply with another ID), ``servfail``,
    ``refused``. ``delay`` seconds are waited before each reply. ``queries``
    lists every question received as ``(name, type, proto)``.

    A ``handler`` may return a list of replies, sent in order (a spoofed one
    before the real one); ``client`` is the address of the query being
    answered. ``truncate_udp`` sizes UDP replies as a real server does (the
    query's EDNS payload or 512 bytes, TC=1); ``tls`` serves DNS over TLS on
    the TCP port; ``tcp_close_after`` closes a TCP connection after that many
    replies; ``connections`` counts accepted TCP (or TLS) connections.
    """

    records: Records = field(default_factory=dict)
    mode: str = "answer"
    delay: float = 0.0
    ttl: int = 300
    host: str = "127.0.0.1"
    port: int = 0
    queries: list[tuple[str, str, str]] = field(default_factory=list)
    handler: (
        Callable[
            [dns.message.Message],
            dns.message.Message | bytes | Sequence[dns.message.Message | bytes] | None,
        ]
        | None
    ) = None
    truncate_udp: bool = False
    tls: ssl.SSLContext | None = None
    tcp_close_after: int = 0
    connections: int = 0
    client: tuple[object, ...] = ()

    @property
    def address(self) -> str:
        """``host:port``, as a forward directive takes it."""
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    def count(self, name: str | None = None, rdtype: str | None = None) -> int:
        """How many queries arrived (for ``name`` and ``rdtype`` when given)."""
        name = name.lower().rstrip(".") + "." if name else None
        return sum(
            1
            for n, t, _ in self.queries
            if (name is None or n == name) and (rdtype is None or t == rdtype)
        )

    def respond(self, wire: bytes, proto: str) -> bytes | None:
        """The reply to one query, or None to stay silent."""
        replies = self.respond_all(wire, proto)
        return replies[-1] if replies else None

    def respond_all(self, wire: bytes, proto: str) -> list[bytes]:
        """Every reply to one query, in sending order (none to stay silent)."""
        try:
            q = dns.message.from_wire(wire)
        except Exception:
            return []
        if self.handler is not None:
            self._record(q, proto)
            out = self.handler(q)
            if out is None:
                return []
            items = [out] if isinstance(out, bytes | dns.message.Message) else list(out)
            replies = [i if isinstance(i, bytes) else i.to_wire(max_size=65535) for i in items]
        else:
            one = self._respond(q, proto)
            replies = [] if one is None else [one]
        if proto == "udp" and self.truncate_udp:
            limit = max(512, q.payload) if q.edns >= 0 else 512
            replies = [_truncate(r, limit) for r in replies]
        return replies

    def _record(self, q: dns.message.Message, proto: str) -> tuple[str, str]:
        qname = q.question[0].name.to_text().lower() if q.question else "."
        qtype = dns.rdatatype.to_text(q.question[0].rdtype) if q.question else "?"
        self.queries.append((qname, qtype, proto))
        return qname, qtype

    def _respond(self, q: dns.message.Message, proto: str) -> bytes | None:
        qname, qtype = self._record(q, proto)
        if self.mode == "silent":
            return None
        if self.mode == "garbage":
            return b"\x13\x37" + bytes(range(40))
        r = dns.message.make_response(q, our_payload=1232)
        r.flags |= dns.flags.RA
        if self.mode == "servfail":
            r.set_rcode(dns.rcode.SERVFAIL)
        elif self.mode == "refused":
            r.set_rcode(dns.rcode.REFUSED)
        else:
            self._answer(q, r, qname, qtype)
        if self.mode == "wrong_id":
            r.id = (q.id + 1) & 0xFFFF
        return r.to_wire(max_size=65535)

    def _answer(
        self, q: dns.message.Message, r: dns.message.Message, qname: str, qtype: str
    ) -> None:
        rdatas = self.records.get((qname, qtype))
        if rdatas:
            r.answer.append(dns.rrset.from_text(qname, self.ttl, "IN", qtype, *rdatas))
            return
        known = any(n == qname for n, _ in self.records)
        if not known:
            r.set_rcode(dns.rcode.NXDOMAIN)
        zone = dns.name.from_text(qname).parent() if qname != "." else dns.name.root
        r.authority.append(
            dns.rrset.from_text(
                zone, self.ttl, "IN", "SOA", "ns.test. hostmaster.test. 1 3600 600 86400 60"
            )
        )

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Upstream]:
        """Serve UDP and TCP until the block ends."""
        udp, tcp = await self._bind()
        with udp, tcp:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._serve_udp, udp, nursery)
                nursery.start_soon(self._serve_tcp, tcp, nursery)
                try:
                    yield self
                finally:
                    nursery.cancel_scope.cancel()

    async def _bind(self) -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(20):
            udp = trio.socket.socket(family, socket.SOCK_DGRAM)
            tcp = trio.socket.socket(family, socket.SOCK_STREAM)
            try:
                await udp.bind((self.host, self.port))
                tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                await tcp.bind((self.host, udp.getsockname()[1]))
                tcp.listen(64)
                self.port = udp.getsockname()[1]
                return udp, tcp
            except OSError:
                udp.close()
                tcp.close()
                if self.port:
                    raise
        raise OSError("no free port for the test upstream")

    async def _serve_udp(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            data, addr = await sock.recvfrom(65535)
            nursery.start_soon(self._reply_udp, sock, data, addr)

    async def _reply_udp(
        self, sock: trio.socket.SocketType, data: bytes, addr: tuple[object, ...]
    ) -> None:
        if self.delay:
            await trio.sleep(self.delay)
        self.client = addr
        for out in self.respond_all(data, "udp"):
            await sock.sendto(out, addr)

    async def _serve_tcp(self, sock: trio.socket.SocketType, nursery: trio.Nursery) -> None:
        while True:
            conn, addr = await sock.accept()
            self.connections += 1
            nursery.start_soon(self._tcp_conn, conn, addr)

    async def _tcp_conn(self, conn: trio.socket.SocketType, addr: tuple[object, ...]) -> None:
        stream: trio.abc.Stream = trio.SocketStream(conn)
        if self.tls is not None:
            stream = trio.SSLStream(stream, self.tls, server_side=True)
        with conn:
            buf = b""
            answered = 0
            while True:
                try:
                    chunk = await stream.receive_some(65535)
                except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                    return
                if not chunk:
                    return
                buf += chunk
                while len(buf) >= 2 and len(buf) >= 2 + struct.unpack(">H", buf[:2])[0]:
                    size = struct.unpack(">H", buf[:2])[0]
                    data, buf = buf[2 : 2 + size], buf[2 + size :]
                    if self.delay:
                        await trio.sleep(self.delay)
                    self.client = addr
                    for out in self.respond_all(data, "tcp"):
                        try:
                            await stream.send_all(struct.pack(">H", len(out)) + out)
                        except (OSError, trio.BrokenResourceError, trio.ClosedResourceError):
                            return
                    answered += 1
                    if self.tcp_close_after and answered >= self.tcp_close_after:
                        return


def _truncate(wire: bytes, limit: int) -> bytes:
    """A reply cut to ``limit`` bytes as a server does over UDP: whole RRsets, TC=1."""
    if len(wire) <= limit:
        return wire
    msg = dns.message.from_wire(wire)
    return msg.to_wire(max_size=limit, prefer_truncation=True)
