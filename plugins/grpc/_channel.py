"""One HTTP/2 connection to a gRPC upstream, shared by the calls in flight (h2 over trio).

The HTTP/2 state machine is h2's (sans-IO); this module only moves its bytes:
``call`` opens a stream, sends the framed query and waits; one reader task
per connection feeds what arrives to h2 and hands each stream's events to
its call. A connection that fails fails the calls on it and is opened again
by the next call.
"""

from __future__ import annotations

import contextlib
import ssl
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import trio

from ._message import MAX_MESSAGE, STATUS_OK, decode_packet, encode_packet, request_headers
from ._message import split_message as _split_message

UNAVAILABLE = 14


class GrpcError(Exception):
    """A call that ended without a reply: a gRPC status other than OK, or a broken stream."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"grpc status {status}: {message}" if message else f"grpc status {status}")
        self.status = status


@dataclass
class _Call:
    done: trio.Event = field(default_factory=trio.Event)
    data: bytearray = field(default_factory=bytearray)
    status: int | None = None
    message: str = ""
    error: Exception | None = None

    def headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        for name, value in headers:
            if name == b":status" and value != b"200":
                self.error = GrpcError(UNAVAILABLE, f"HTTP status {value.decode()}")
            elif name == b"grpc-status":
                self.status = int(value) if value.isdigit() else UNAVAILABLE
            elif name == b"grpc-message":
                self.message = value.decode("utf-8", "replace")

    def fail(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self.done.set()


@dataclass
class _Connection:
    stream: trio.abc.Stream
    h2: h2.connection.H2Connection
    calls: dict[int, _Call] = field(default_factory=dict)
    send_lock: trio.Lock = field(default_factory=trio.Lock)
    closed: bool = False


class Channel:
    """Calls ``coredns.dns.DnsService/Query`` on one upstream over one HTTP/2 connection."""

    def __init__(
        self, host: str, port: int, tls: ssl.SSLContext | None = None, server_name: str = ""
    ) -> None:
        self.host, self.port = host, port
        self.tls, self.server_name = tls, server_name or host
        host_text = f"[{host}]" if ":" in host else host
        self.authority = f"{host_text}:{port}"
        self._connection: _Connection | None = None
        self._connecting = trio.Lock()
        self._nursery: trio.Nursery | None = None
        self._running = trio.Event()

    async def run(self) -> None:
        """Hold the connection's reader task (the plugin's background task runs this)."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._running.set()
                await trio.sleep_forever()
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            self._drop(connection, GrpcError(UNAVAILABLE, "channel closed"))
            with trio.CancelScope(shield=True):
                await trio.aclose_forcefully(connection.stream)

    async def call(self, query: bytes) -> bytes:
        """Send a DNS query, return the upstream's DNS reply; ``GrpcError`` or ``OSError``."""
        connection = await self._connect()
        conn = connection.h2
        stream_id = conn.get_next_available_stream_id()
        call = connection.calls[stream_id] = _Call()
        try:
            conn.send_headers(stream_id, request_headers(self.authority, self._scheme))
            conn.send_data(stream_id, encode_packet(query), end_stream=True)
            await self._flush(connection)
            await call.done.wait()
        finally:
            connection.calls.pop(stream_id, None)
            if not call.done.is_set() and not connection.closed:
                with contextlib.suppress(h2.exceptions.H2Error):
                    conn.reset_stream(stream_id, error_code=8)  # CANCEL, sent with the next write
        if call.error is not None:
            raise call.error
        if call.status != STATUS_OK:
            raise GrpcError(call.status if call.status is not None else UNAVAILABLE, call.message)
        return decode_packet(_split_message(bytes(call.data)))

    @property
    def _scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    async def _connect(self) -> _Connection:
        connection = self._connection
        if connection is not None and not connection.closed:
            return connection
        async with self._connecting:
            connection = self._connection
            if connection is not None and not connection.closed:
                return connection
            await self._running.wait()
            stream: trio.abc.Stream = await trio.open_tcp_stream(self.host, self.port)
            try:
                if self.tls is not None:
                    tls_stream = trio.SSLStream(stream, self.tls, server_hostname=self.server_name)
                    await tls_stream.do_handshake()
                    if tls_stream.selected_alpn_protocol() not in (None, "h2"):
                        raise GrpcError(UNAVAILABLE, "the upstream does not speak HTTP/2")
                    stream = tls_stream
                conn = h2.connection.H2Connection(
                    h2.config.H2Configuration(client_side=True, header_encoding=None)
                )
                conn.initiate_connection()
                connection = _Connection(stream, conn)
                await self._flush(connection)
            except BaseException:
                await trio.aclose_forcefully(stream)
                raise
            assert self._nursery is not None
            self._nursery.start_soon(self._read, connection)
            self._connection = connection
            return connection

    async def _flush(self, connection: _Connection) -> None:
        async with connection.send_lock:
            data = connection.h2.data_to_send()
            if data:
                try:
                    await connection.stream.send_all(data)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                    self._drop(connection, GrpcError(UNAVAILABLE, f"connection lost: {exc}"))
                    raise GrpcError(UNAVAILABLE, f"connection lost: {exc}") from None

    async def _read(self, connection: _Connection) -> None:
        """Feed the connection's bytes to h2 and its events to the calls, until it ends."""
        conn = connection.h2
        reason: Exception = GrpcError(UNAVAILABLE, "connection closed by the upstream")
        try:
            while not connection.closed:
                data = await connection.stream.receive_some(65536)
                if not data:
                    break
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.ConnectionTerminated):
                        reason = GrpcError(UNAVAILABLE, "the upstream ended the connection")
                        connection.closed = True
                    else:
                        self._dispatch(connection, event)
                await self._flush(connection)  # acknowledgements, window updates, pings
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            reason = GrpcError(UNAVAILABLE, f"connection lost: {exc}")
        except h2.exceptions.H2Error as exc:
            reason = GrpcError(UNAVAILABLE, f"HTTP/2 error: {exc}")
        except GrpcError as exc:
            reason = exc
        self._drop(connection, reason)
        with trio.CancelScope(shield=True):
            await trio.aclose_forcefully(connection.stream)

    def _dispatch(self, connection: _Connection, event: h2.events.Event) -> None:
        stream_id = getattr(event, "stream_id", None)
        call = connection.calls.get(stream_id) if stream_id else None
        if isinstance(event, h2.events.DataReceived):
            connection.h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if call is not None and event.data:
                call.data += event.data
                if len(call.data) > MAX_MESSAGE + 5:
                    connection.h2.reset_stream(event.stream_id, error_code=8)
                    call.fail(GrpcError(UNAVAILABLE, "reply too large"))
            return
        if call is None:
            return
        if isinstance(event, h2.events.ResponseReceived | h2.events.TrailersReceived):
            call.headers(list(event.headers or ()))
        elif isinstance(event, h2.events.StreamEnded):
            call.done.set()
        elif isinstance(event, h2.events.StreamReset):
            call.fail(GrpcError(UNAVAILABLE, f"stream reset by the upstream ({event.error_code})"))

    def _drop(self, connection: _Connection, reason: Exception) -> None:
        connection.closed = True
        if self._connection is connection:
            self._connection = None
        for call in list(connection.calls.values()):
            call.fail(reason)
        connection.calls.clear()
