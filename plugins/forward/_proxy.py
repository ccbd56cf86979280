"""One upstream: exchanges over UDP, TCP or TLS, a pool of reusable connections, health.

Every UDP try uses a new socket connected to the upstream, so the kernel
picks a fresh random source port, drops datagrams from any other address,
and reports an ICMP "port unreachable" as ``ConnectionRefusedError``. TCP and
TLS connections carry one query at a time and go back to an idle pool for
reuse until they have been idle for ``expire``.
"""

from __future__ import annotations

import socket
import ssl
import struct

import trio

from ._message import Checked, Question, check_reply
from ._metrics import UpstreamCounters
from ._parse import ForwardConfig, UpstreamAddress

_U16 = struct.Struct(">H")
MAX_MESSAGE = 65535


class UpstreamFailure(Exception):
    """A try that got no usable reply from the upstream (it counts against its health)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason


class LocalFailure(Exception):
    """We could not even try (no socket left): not the upstream's fault."""


class _Connection:
    """A TCP or TLS stream to an upstream, with what was read past the last message."""

    __slots__ = ("buffer", "last_used", "sock", "stream")

    def __init__(self, stream: trio.abc.Stream, sock: trio.socket.SocketType) -> None:
        self.stream = stream
        self.sock = sock
        self.buffer = bytearray()
        self.last_used = trio.current_time()

    def close(self) -> None:
        """Close at once, without a TLS close_notify (never blocks, safe when cancelled)."""
        self.sock.close()

    async def send_message(self, wire: bytes) -> None:
        await self.stream.send_all(_U16.pack(len(wire)) + wire)

    async def receive_message(self) -> bytes:
        """The next length-prefixed message; EOFError when the upstream closed."""
        buf = self.buffer
        while True:
            if len(buf) >= 2:
                size = _U16.unpack_from(buf)[0]
                if len(buf) >= 2 + size:
                    message = bytes(buf[2 : 2 + size])
                    del buf[: 2 + size]
                    return message
            chunk = await self.stream.receive_some(MAX_MESSAGE)
            if not chunk:
                raise EOFError("connection closed by the upstream")
            buf += chunk


_STREAM_ERRORS = (
    EOFError, OSError, ssl.SSLError, trio.BrokenResourceError, trio.ClosedResourceError,
)  # fmt: skip


class Proxy:
    """An upstream of one forward directive: how to reach it and how healthy it is."""

    def __init__(
        self, address: UpstreamAddress, config: ForwardConfig, counters: UpstreamCounters
    ) -> None:
        self.address = address
        self.label = address.label
        self.counters = counters
        self.family = socket.AF_INET6 if address.is_ipv6 else socket.AF_INET
        self.sockaddr = (address.host, address.port)
        self.tls = address.tls
        self.ssl_context = config.ssl_context
        self.server_name = address.server_name or config.tls_servername or address.host
        self.expire = config.expire
        self.max_idle = config.max_idle_conns
        self.fails = 0
        """Consecutive failed health checks."""
        self.trouble = trio.Event()
        """Set when a try failed: the health checker starts probing."""
        self.idle: list[_Connection] = []
        self.closed = False

    def __repr__(self) -> str:
        return f"<Proxy {'tls://' if self.tls else ''}{self.label} fails={self.fails}>"

    def down(self, max_fails: int) -> bool:
        """Down after ``max_fails`` failed health checks in a row (never when 0)."""
        return max_fails > 0 and self.fails >= max_fails

    def transport(self, client_proto: str, force_tcp: bool, prefer_udp: bool) -> str:
        """``tls``, ``tcp`` or ``udp`` for a try: TLS upstreams always TLS."""
        if self.tls:
            return "tls"
        if force_tcp:
            return "tcp"
        if prefer_udp:
            return "udp"
        return "tcp" if client_proto == "tcp" else "udp"

    async def exchange(
        self, query: bytes, qid: int, question: Question, transport: str
    ) -> tuple[bytes, Checked]:
        """Send ``query`` (already carrying ``qid``) and wait for the matching reply.

        Raises UpstreamFailure or LocalFailure; the caller bounds the time.
        """
        if transport == "udp":
            return await self._udp(query, qid, question)
        return await self._stream(query, qid, question, transport)

    async def _udp(self, query: bytes, qid: int, question: Question) -> tuple[bytes, Checked]:
        try:
            sock = trio.socket.socket(self.family, socket.SOCK_DGRAM)
        except OSError as exc:
            raise LocalFailure(f"no UDP socket: {exc.strerror}") from None
        with sock:
            try:
                await sock.connect(self.sockaddr)
                await sock.send(query)
                while True:
                    data = await sock.recv(MAX_MESSAGE)
                    checked = check_reply(data, qid, question)
                    if checked is not None:
                        return data, checked
                    self.counters.mismatched += 1
            except ConnectionRefusedError:
                raise UpstreamFailure("refused", "connection refused") from None
            except OSError as exc:
                raise UpstreamFailure("error", exc.strerror or str(exc)) from None

    async def _stream(
        self, query: bytes, qid: int, question: Question, transport: str
    ) -> tuple[bytes, Checked]:
        while True:
            conn = self._take_idle()
            reused = conn is not None
            if conn is None:
                self.counters.connection(transport, reused=False)
                conn = await self._connect()
            else:
                self.counters.connection(transport, reused=True)
            try:
                await conn.send_message(query)
                while True:
                    data = await conn.receive_message()
                    checked = check_reply(data, qid, question)
                    if checked is not None:
                        break
                    self.counters.mismatched += 1
            except _STREAM_ERRORS as exc:
                conn.close()
                if reused:
                    continue  # the upstream closed an idle connection: try a new one at once
                raise UpstreamFailure("closed", str(exc) or type(exc).__name__) from None
            except BaseException:
                conn.close()  # cancelled mid-exchange: the stream is in an unknown state
                raise
            self._put_idle(conn)
            return data, checked

    async def _connect(self) -> _Connection:
        try:
            sock = trio.socket.socket(self.family, socket.SOCK_STREAM)
        except OSError as exc:
            raise LocalFailure(f"no TCP socket: {exc.strerror}") from None
        try:
            await sock.connect(self.sockaddr)
            stream: trio.abc.Stream = trio.SocketStream(sock)
            if self.tls:
                assert self.ssl_context is not None
                ssl_stream = trio.SSLStream(
                    stream, self.ssl_context, server_hostname=self.server_name
                )
                await ssl_stream.do_handshake()
                stream = ssl_stream
        except ConnectionRefusedError:
            sock.close()
            raise UpstreamFailure("refused", "connection refused") from None
        except trio.BrokenResourceError as exc:
            sock.close()
            cause = exc.__cause__ or exc
            raise UpstreamFailure("tls", f"TLS handshake failed: {cause}") from None
        except OSError as exc:
            sock.close()
            raise UpstreamFailure("error", exc.strerror or str(exc)) from None
        except BaseException:
            sock.close()
            raise
        return _Connection(stream, sock)

    def _take_idle(self) -> _Connection | None:
        """The most recently used idle connection that has not expired."""
        now = trio.current_time()
        while self.idle:
            conn = self.idle.pop()
            if now - conn.last_used < self.expire:
                return conn
            conn.close()
        return None

    def _put_idle(self, conn: _Connection) -> None:
        if self.closed or self.expire <= 0:
            conn.close()
            return
        conn.last_used = trio.current_time()
        self.idle.append(conn)
        if self.max_idle and len(self.idle) > self.max_idle:
            self.idle.pop(0).close()
        self.sweep()

    def sweep(self) -> None:
        """Close idle connections unused for ``expire`` (the oldest are first)."""
        now = trio.current_time()
        while self.idle and now - self.idle[0].last_used >= self.expire:
            self.idle.pop(0).close()

    def close(self) -> None:
        """Close every idle connection; connections in use close when their try ends."""
        self.closed = True
        while self.idle:
            self.idle.pop().close()
