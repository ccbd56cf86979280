"""Helpers for testing plugins: without sockets, and against the real server.

Without sockets (CoreDNS's ``test.NextHandler`` and ``dnstest.Recorder``):
``NextHandler`` stands for the rest of the chain (a fixed reply, the requests
it saw, optionally a wait or an error), ``chain`` links plugin instances in
front of it exactly as the server does, ``setup_plugin`` builds a plugin from
Corefile lines, and ``run`` / ``run_async`` drive ``handle`` and return the
reply as the client would get it.

With sockets: ``serve`` runs a Corefile in-process on a free loopback port
(``plugins=`` adds plugin classes that are not installed); ``query`` asks it
over UDP or TCP with dnspython; ``scrape`` reads its metrics; ``Upstream`` is
a small authoritative server on 127.0.0.x that counts what it is asked and can
misbehave on purpose (silent, slow, garbage, wrong ID, oversize), to stand in
for real upstreams.
"""

from __future__ import annotations

import copy
import socket
import ssl
import struct
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TypeVar

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

from ._app import load_config, open_server
from ._chain import compile_chain
from ._contract import settle, then
from ._request import Handler, Request
from ._server import Server
from ._types import Pending, Reply, Result
from .plugin import End, Plugin, PluginError

__all__ = [
    "Dropped",
    "Metrics",
    "NextHandler",
    "Upstream",
    "WouldWait",
    "chain",
    "closed_by_server",
    "make_query",
    "make_request",
    "query",
    "query_wire",
    "run",
    "run_async",
    "scrape",
    "serve",
    "setup_plugin",
]

serve = open_server
"""Serve a Corefile in-process for the duration of an ``async with`` block.

``serve(corefile, plugins={"rename": RenamePlugin})`` adds plugin classes that
are not installed as entry points (see ``pycorefile.open_server``).
"""


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


async def closed_by_server(sock: trio.socket.SocketType, timeout: float = 10.0) -> bool:
    """True when the server closes (or resets) a TCP connection within ``timeout``.

    Whatever it still sends before that is read and dropped. For tests (and
    the attack soak) that check the server ends a misbehaving client's connection.
    """
    with trio.move_on_after(timeout):
        try:
            while await sock.recv(65535):
                pass
        except OSError:
            pass
        return True
    return False


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


# -- Testing a plugin without sockets ----------------------------------------------------

P = TypeVar("P", bound=Plugin)

Record = str | dns.rrset.RRset
"""A zone-file line ``NAME TTL CLASS TYPE RDATA`` (``@`` is the question name) or an RRset."""


class NextHandler:
    """The rest of the chain, in a test: answers every request with one fixed reply.

    CoreDNS's ``test.NextHandler``. The reply is ``rcode`` with the ``answer``
    and ``authority`` records (zone-file lines, ``"@ 300 IN A 192.0.2.1"``,
    where ``@`` stands for the question name as asked, or RRsets), with AA set
    when ``authoritative``; ``reply``, a function of the request, replaces all
    of that. ``as_bytes`` gives wire bytes instead of a ``Message`` (what a
    cache gives back), so a plugin can be tested with both kinds of reply.

    ``wait`` makes ``handle`` return a ``Pending``: True waits one scheduling
    point, a number sleeps that many seconds (``math.inf``: until cancelled).
    ``error`` is raised instead of answering (a copy of it each time), now or
    once the wait is over.

    ``requests`` lists every request seen, in order (a plugin that passes on a
    renamed copy shows it here); ``cancelled`` counts the waits cancelled.
    """

    def __init__(
        self,
        rcode: int = dns.rcode.NOERROR,
        answer: Iterable[Record] = (),
        authority: Iterable[Record] = (),
        *,
        authoritative: bool = False,
        as_bytes: bool = False,
        reply: Callable[[Request], Reply] | None = None,
        wait: bool | float = False,
        error: Exception | None = None,
    ) -> None:
        self.rcode = rcode
        self.answer = list(answer)
        self.authority = list(authority)
        for record in (*self.answer, *self.authority):
            if isinstance(record, str):
                _rrset(record, dns.name.root)  # a mistake shows here, not at the first query
        self.authoritative = authoritative
        self.as_bytes = as_bytes
        self.reply = reply
        self.wait = wait
        self.error = error
        self.requests: list[Request] = []
        self.cancelled = 0

    def handle(self, request: Request) -> Result:
        self.requests.append(request)
        if self.wait is False:
            return self._respond(request)
        return Pending(self._later(request))

    async def _later(self, request: Request) -> Reply:
        try:
            if self.wait is True:
                await trio.lowlevel.checkpoint()
            else:
                await trio.sleep(self.wait)
        except trio.Cancelled:
            self.cancelled += 1
            raise
        return self._respond(request)

    def _respond(self, request: Request) -> Reply:
        if self.error is not None:
            raise copy.copy(self.error)
        if self.reply is not None:
            return self.reply(request)
        msg = request.reply(self.rcode, authoritative=self.authoritative)
        for section, records in ((msg.answer, self.answer), (msg.authority, self.authority)):
            for record in records:
                rrset = _rrset(record, request.qname) if isinstance(record, str) else record
                target = msg.find_rrset(
                    section, rrset.name, rrset.rdclass, rrset.rdtype, create=True
                )
                for rdata in rrset:
                    target.add(rdata, rrset.ttl)
        return msg.to_wire(max_size=65535) if self.as_bytes else msg


def _rrset(line: str, question: dns.name.Name) -> dns.rrset.RRset:
    try:
        name, ttl, rdclass, rdtype, rdata = line.split(None, 4)
        owner = question if name == "@" else dns.name.from_text(name)
        return dns.rrset.from_text(owner, int(ttl), rdclass, rdtype, rdata)
    except Exception as exc:
        raise ValueError(f"not a record line (NAME TTL CLASS TYPE RDATA): {line!r}: {exc}") from exc


def chain(plugins: Plugin | Sequence[Plugin], next: Handler | None = None) -> Handler:
    """Link plugin instances (outermost first) in front of ``next``, as the server does.

    Every plugin's ``next`` is set, and the chain credits replies
    (``request.answered_by``) and names exceptions after their plugin exactly
    as a served chain. ``next`` defaults to the chain's end (SERVFAIL, as a
    chain whose plugins all pass the query on).
    """
    listed = [plugins] if isinstance(plugins, Plugin) else list(plugins)
    for plugin in listed:
        if not plugin.name:
            raise ValueError(
                f"{type(plugin).__qualname__} has no directive name: build it with "
                "setup_plugin(), or set the class's `name`"
            )
    end = next if next is not None else End(listed[-1].name if listed else "")
    handler, _known = compile_chain(listed, end)
    return handler


def setup_plugin(cls: type[P], lines: str, *, zone: str = ".") -> P:
    """The plugin that Corefile ``lines`` make, built exactly as the server builds it.

    The first word of ``lines`` is the plugin's directive: ``cls`` is
    registered under it for this call only (other directives in ``lines`` may
    name installed plugins). The lines are the body of a server block for
    ``zone``: ``ZONE {`` is line 1 of the file ``Corefile``, so the first of
    ``lines`` is line 2. A mistake raises ``CorefileError`` with its position
    (``Corefile:2:8 - plugin/rename: ...``).
    """
    words = lines.split(None, 1)
    if not words:
        raise ValueError("setup_plugin needs the plugin's directive line")
    directive = words[0]
    config = load_config(f"{zone} {{\n{lines}\n}}\n", plugins={directive: cls})
    plugin = config.find(directive)[0]
    assert isinstance(plugin, cls)
    return plugin


def make_request(
    name: str | dns.message.Message,
    rdtype: str | int = "A",
    *,
    client: tuple[str, int] = ("127.0.0.1", 40000),
    proto: str = "udp",
    **options: bool | int,
) -> Request:
    """A Request as the server makes one from a client's query (``make_query`` options)."""
    q = name if isinstance(name, dns.message.Message) else make_query(name, rdtype, **options)  # type: ignore[arg-type]
    return Request.from_message(q, client, proto)


class WouldWait(Exception):
    """``run`` was given a chain that returned a Pending: use ``await run_async(...)``."""


class Dropped(Exception):
    """The chain answered ``DROP``: the server would send nothing."""


def run(
    handler: Handler,
    query: str | dns.message.Message | Request,
    rdtype: str | int = "A",
    **options: bool | int | str | tuple[str, int],
) -> dns.message.Message:
    """Drive ``handler.handle`` with a query that must be answered without waiting.

    ``query`` is a name (with ``rdtype`` and ``make_request`` options), a
    dnspython query, or a ``Request`` (pass your own to read its
    ``answered_by`` afterwards). Returns the reply as the client gets it
    (sized for the client, parsed). An exception from the chain is raised as
    is (the server would answer it SERVFAIL, or the ``PluginError``'s rcode);
    ``WouldWait`` when the chain returned a Pending (it is discarded), which
    also makes ``run`` an assertion that a path does not wait.
    """
    request, result = _start(handler, query, rdtype, options)
    if type(result) is Pending:
        result.discard()
        raise WouldWait(f"{request!r}: the chain returned a Pending; use await run_async(...)")
    return _finish(request, result)  # type: ignore[arg-type]


async def run_async(
    handler: Handler,
    query: str | dns.message.Message | Request,
    rdtype: str | int = "A",
    *,
    timeout: float = 30.0,
    **options: bool | int | str | tuple[str, int],
) -> dns.message.Message:
    """``run``, but a Pending is settled (awaited once, its continuations run), as the server does.

    ``timeout`` is the query's deadline: when it passes, the wait is cancelled
    (every ``on_cancel`` is told) and ``trio.TooSlowError`` is raised.
    """
    request, result = _start(handler, query, rdtype, options)
    with trio.fail_after(timeout):
        reply = await settle(result)
    return _finish(request, reply)


def _start(
    handler: Handler,
    query: str | dns.message.Message | Request,
    rdtype: str | int,
    options: dict[str, bool | int | str | tuple[str, int]],
) -> tuple[Request, Result]:
    request = query if isinstance(query, Request) else make_request(query, rdtype, **options)  # type: ignore[arg-type]
    if request.resolver is None:
        request.resolver = _ChainResolver(handler)
    return request, handler.handle(request)


class _ChainResolver:
    """What ``plugin.lookup`` asks in a test driven by ``run``: the tested chain, from the top.

    As the server's: a failure of the chain becomes its error reply.
    """

    def __init__(self, handler: Handler) -> None:
        self.handler = handler

    def resolve(self, request: Request) -> Result:
        request.resolver = self
        try:
            result = self.handler.handle(request)
        except Exception as exc:
            return self._failed(request, exc)
        return then(result, None, lambda exc: self._failed(request, exc))

    @staticmethod
    def _failed(request: Request, exc: Exception) -> Reply:
        return request.error(exc.rcode if isinstance(exc, PluginError) else dns.rcode.SERVFAIL)


def _finish(request: Request, reply: Reply) -> dns.message.Message:
    wire = request.to_wire(reply)
    if not wire:
        raise Dropped(f"{request!r} was dropped")
    return dns.message.from_wire(wire)


# -- Metrics of a served Corefile ----------------------------------------------------------


class Metrics:
    """What ``/metrics`` said: every sample by name and labels."""

    def __init__(self, text: str) -> None:
        from prometheus_client.parser import text_string_to_metric_families

        self.text = text
        self.samples: list[tuple[str, dict[str, str], float]] = [
            (sample.name, dict(sample.labels), float(sample.value))
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        ]

    def value(self, name: str, **labels: str) -> float:
        """The sum of the samples called ``name`` that carry these labels (0 when none)."""
        return sum(
            value
            for sample, have, value in self.samples
            if sample == name and all(have.get(k) == v for k, v in labels.items())
        )


async def scrape(server: Server, address: str = "127.0.0.1:0", path: str = "/metrics") -> Metrics:
    """The metrics of a served Corefile, read over HTTP from its *prometheus* listener.

    ``address`` is the listener as the Corefile names it (``prometheus
    127.0.0.1:0`` is the default here).
    """
    host, _, port = address.rpartition(":")
    bound = server.http_address(host.strip("[]"), int(port))
    family = socket.AF_INET6 if ":" in bound[0] else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_STREAM) as sock, trio.fail_after(10):
        await sock.connect(bound)
        await sock.send(f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := await sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status = head.split(b" ", 2)[1]
    if status != b"200":
        raise RuntimeError(f"GET {path} from {bound}: {head.decode('latin-1').splitlines()[0]}")
    return Metrics(body.decode())
