"""One upstream: exchanges over UDP, TCP or TLS, reusable sockets, health.

UDP queries travel on a few *channels* per upstream: connected sockets (the
kernel drops datagrams from any other address) that carry many queries at
once, told apart by their random IDs, and that are replaced after
``expire``. One reader task per channel drains replies and hands each to the
task waiting for it, and a sweeper answers waits whose time is up, so a query
costs one send and one wake-up: no socket, no cancel scope of its own. TCP
and TLS connections carry one query at a time and go back to an idle pool
for reuse until they have been idle for ``expire``.
"""

from __future__ import annotations

import logging
import math
import os
import random
import socket
import ssl
import struct
from collections.abc import Callable

import outcome
import trio

from ._message import Checked, Question, check_reply, new_id
from ._metrics import UpstreamCounters
from ._parse import ForwardConfig, UpstreamAddress

_U16 = struct.Struct(">H")
MAX_MESSAGE = 65535
UDP_CHANNELS = 4
"""Channels per upstream in use at once; each query takes one at random."""
UDP_RECV_BUFFER = 1024 * 1024
"""Receive buffer of a channel: replies to every query in flight must fit."""

log = logging.getLogger("pycorefile")


class UpstreamFailure(Exception):
    """A try that got no usable reply from the upstream (it counts against its health).

    ``reason`` is the metric label (``timeout``, ``refused``, ``closed``,
    ``tls``, ``error``); the text is written as Go's net package writes it
    (``read udp 10.0.0.1:40000->10.0.0.2:53: i/o timeout``), which is what
    CoreDNS logs, so ``errors { consolidate ... }`` patterns written for
    CoreDNS match ours.
    """

    def __init__(self, reason: str, text: str) -> None:
        super().__init__(text)
        self.reason = reason


def net_error(op: str, net: str, remote: str, detail: str, local: str = "") -> str:
    """An error text as Go writes it: ``OP NET [LOCAL->]REMOTE: DETAIL``."""
    return f"{op} {net} {local}->{remote}: {detail}" if local else f"{op} {net} {remote}: {detail}"


def os_detail(syscall: str, exc: BaseException) -> str:
    """What Go says after the address for a failed system call: ``read: connection refused``."""
    if isinstance(exc, OSError) and exc.errno:
        text = os.strerror(exc.errno)
    else:
        text = str(exc) or type(exc).__name__
    return f"{syscall}: {text[:1].lower()}{text[1:]}"


I_O_TIMEOUT = "i/o timeout"
CLOSED = "use of closed network connection"


def address_label(sockaddr: tuple[object, ...]) -> str:
    """``host:port`` (``[v6]:port``) of a socket address."""
    host = str(sockaddr[0])
    return f"[{host}]:{sockaddr[1]}" if ":" in host else f"{host}:{sockaddr[1]}"


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


class _Waiter:
    """A task waiting on a channel for the reply to one query."""

    __slots__ = ("deadline", "question", "task")

    def __init__(self, task: trio.lowlevel.Task, question: Question, deadline: float) -> None:
        self.task = task
        self.question = question
        self.deadline = deadline


class _UdpChannel:
    """A connected UDP socket to one upstream, carrying many queries at once by ID."""

    def __init__(self, proxy: Proxy, retire_at: float) -> None:
        sock = socket.socket(proxy.family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECV_BUFFER)
            sock.connect(proxy.sockaddr)
        except BaseException:
            sock.close()
            raise
        self.sock = sock
        self.counters = proxy.counters
        self.remote = proxy.label
        self.local = address_label(sock.getsockname())
        self.retire_at = retire_at
        self.pending: dict[int, _Waiter] = {}
        self.retired = False
        self.closed = False
        self._sweep_scope = trio.CancelScope()
        trio.lowlevel.spawn_system_task(self._read, name="forward/udp-reader")
        trio.lowlevel.spawn_system_task(self._sweep, name="forward/udp-sweeper")

    async def exchange(
        self, query: bytes, qid: int, question: Question, deadline: float
    ) -> tuple[bytes, Checked]:
        """Send ``query`` and wait for its reply until ``deadline`` (a trio time)."""
        pending = self.pending
        if qid in pending:  # the ID is taken on this socket: draw another
            while qid in pending:
                qid = new_id()
            query = _U16.pack(qid) + query[2:]
        waiter = _Waiter(trio.lowlevel.current_task(), question, deadline)
        pending[qid] = waiter
        if deadline < self._sweep_scope.deadline:
            self._sweep_scope.deadline = deadline
        try:
            self.sock.send(query)
        except OSError as exc:
            del pending[qid]
            text = self._error("write", os_detail("write", exc))
            if isinstance(exc, ConnectionRefusedError):
                # An ICMP error cannot be told apart by query: it may belong to
                # any query in flight here, so all of them fail now.
                self._fail_all("refused", text)
                self.close()
                raise UpstreamFailure("refused", text) from None
            raise UpstreamFailure("error", text) from None

        def abort(_: Callable[[], BaseException]) -> trio.lowlevel.Abort:
            if pending.get(qid) is waiter:
                del pending[qid]
                if self.retired and not pending:
                    self._sweep_scope.deadline = -math.inf  # the sweeper closes it
            return trio.lowlevel.Abort.SUCCEEDED

        result: tuple[bytes, Checked] = await trio.lowlevel.wait_task_rescheduled(abort)
        return result

    async def _read(self) -> None:
        """Hand every reply to its waiter; end when closed, or retired and idle."""
        sock = self.sock
        pending = self.pending
        try:
            while not self.closed and (pending or not self.retired):
                await trio.lowlevel.wait_readable(sock)
                while True:
                    try:
                        data = sock.recv(MAX_MESSAGE)
                    except (BlockingIOError, InterruptedError):
                        break
                    qid = data[0] << 8 | data[1] if len(data) >= 2 else -1
                    waiter = pending.get(qid)
                    checked = check_reply(data, qid, waiter.question) if waiter else None
                    if waiter is None or checked is None:
                        self.counters.mismatched += 1  # late, spoofed or garbled
                        continue
                    del pending[qid]
                    trio.lowlevel.reschedule(waiter.task, outcome.Value((data, checked)))
        except OSError as exc:
            reason = "refused" if isinstance(exc, ConnectionRefusedError) else "closed"
            self._fail_all(reason, self._error("read", os_detail("read", exc)))
        except (trio.ClosedResourceError, ValueError):
            self._fail_all("closed", self._error("read", CLOSED))
        except Exception as exc:  # a system task must not raise: it would end the server
            log.exception("plugin/forward: reading replies failed")
            self._fail_all("error", self._error("read", f"reading replies failed: {exc!r}"))
        finally:
            self.close()

    async def _sweep(self) -> None:
        """Fail the waits whose deadline passed (sleeping until the earliest one);
        close the channel once it is retired and nothing waits on it."""
        pending = self.pending
        while not self.closed:
            with self._sweep_scope:
                await trio.sleep_forever()
            now = trio.current_time()
            earliest = math.inf
            for qid, waiter in list(pending.items()):
                if waiter.deadline <= now:
                    del pending[qid]
                    failure = UpstreamFailure("timeout", self._error("read", I_O_TIMEOUT))
                    trio.lowlevel.reschedule(waiter.task, outcome.Error(failure))
                elif waiter.deadline < earliest:
                    earliest = waiter.deadline
            if self.retired and not pending:
                self.close()  # the reader, waiting for data that will not come, ends too
            self._sweep_scope = trio.CancelScope(deadline=earliest)

    def _error(self, op: str, detail: str) -> str:
        return net_error(op, "udp", self.remote, detail, self.local)

    def _fail_all(self, reason: str, text: str) -> None:
        """Every query in flight here fails (each gets its own exception)."""
        waiters = list(self.pending.values())
        self.pending.clear()
        for waiter in waiters:
            trio.lowlevel.reschedule(waiter.task, outcome.Error(UpstreamFailure(reason, text)))

    def retire(self) -> None:
        """Take no new queries; close once the ones in flight are answered."""
        self.retired = True
        if not self.pending:
            self.close()

    def close(self) -> None:
        """Close now: the reader and sweeper end, waiters get a failure."""
        if self.closed:
            return
        self.closed = True
        self._sweep_scope.cancel()
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()
        self._fail_all("closed", self._error("read", CLOSED))


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
        self.channels: list[_UdpChannel | None] = [None] * UDP_CHANNELS
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
        self,
        query: bytes,
        qid: int,
        question: Question,
        transport: str,
        deadline: float = math.inf,
    ) -> tuple[bytes, Checked]:
        """Send ``query`` (already carrying ``qid``) and wait for the matching reply.

        Raises UpstreamFailure (``timeout`` once ``deadline``, a trio time,
        passes) or LocalFailure.
        """
        if transport == "udp":
            return await self._channel().exchange(query, qid, question, deadline)
        with trio.move_on_at(deadline):
            return await self._stream(query, qid, question, transport)
        raise UpstreamFailure("timeout", net_error("read", "tcp", self.label, I_O_TIMEOUT))

    def _channel(self) -> _UdpChannel:
        """A UDP channel for one query: one of a few, each replaced after ``expire``."""
        if self.closed:
            raise LocalFailure("upstream closed (reload or shutdown)")
        slot = random.randrange(UDP_CHANNELS)
        channel = self.channels[slot]
        now = trio.current_time()
        if channel is None or channel.closed or now >= channel.retire_at:
            if channel is not None:
                channel.retire()
            try:
                channel = _UdpChannel(self, now + self.expire)
            except OSError as exc:
                raise LocalFailure(f"no UDP socket: {exc.strerror}") from None
            self.channels[slot] = channel
        return channel

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
                text = "EOF" if isinstance(exc, EOFError) else (
                    net_error("read", "tcp", self.label, os_detail("read", exc))
                )  # fmt: skip
                raise UpstreamFailure("closed", text) from None
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
        except ConnectionRefusedError as exc:
            sock.close()
            text = net_error("dial", "tcp", self.label, os_detail("connect", exc))
            raise UpstreamFailure("refused", text) from None
        except trio.BrokenResourceError as exc:
            sock.close()
            cause = exc.__cause__ or exc
            text = f"tls: handshake with {self.label} failed: {cause}"
            raise UpstreamFailure("tls", text) from None
        except OSError as exc:
            sock.close()
            text = net_error("dial", "tcp", self.label, os_detail("connect", exc))
            raise UpstreamFailure("error", text) from None
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
        """Close idle connections unused for ``expire`` and UDP channels past it."""
        now = trio.current_time()
        while self.idle and now - self.idle[0].last_used >= self.expire:
            self.idle.pop(0).close()
        for slot, channel in enumerate(self.channels):
            if channel is not None and (channel.closed or now >= channel.retire_at):
                channel.retire()
                self.channels[slot] = None

    def close(self) -> None:
        """Close every idle connection and UDP channel; TCP in use closes when its try ends."""
        self.closed = True
        while self.idle:
            self.idle.pop().close()
        for slot, channel in enumerate(self.channels):
            if channel is not None:
                channel.retire()
                self.channels[slot] = None
