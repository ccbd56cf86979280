"""DNS over TCP: one connection's framing, deadlines, pipelining and backpressure.

A connection costs a bounded amount whatever its client does:

- reading has a deadline per message, not per read (``ReadClock``): the first
  message within ``read`` of the accept, each later one within ``read`` of its
  first byte, and at most ``idle`` of silence between messages;
- at most ``pipeline`` of its queries wait on plugins at once, and at most
  ``write_queue`` bytes of replies wait to be written; beyond either, the
  connection is not read until there is room again (the client's sends
  block: TCP's own backpressure);
- a write that cannot finish within ``write`` closes the connection (a client
  that sends queries and never reads the replies);
- a client that resets the connection ends that connection, nothing else.

``Framer`` splits the byte stream into messages without I/O.
"""

from __future__ import annotations

import struct
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol

import trio

from ._conn import CLIENT_GONE, ReadClock

if TYPE_CHECKING:
    from ._request import Request
    from .plugin import TcpTimeouts

RECV_STEP = 4096
"""Bytes read at a time: a connection holding part of a message holds what came, no more."""
WRITE_BATCH = 16384
"""Queued replies are written together up to about this many bytes."""

Send = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True)
class TcpLimits:
    """What one DNS-over-TCP connection may take. The timeouts plugin sets the first four."""

    read: float = 3.0
    """Seconds to receive a whole message (the first one: counted from the accept)."""
    write: float = 5.0
    """Seconds a write of replies may take; longer closes the connection."""
    idle: float = 10.0
    """Seconds of silence allowed between messages."""
    max_queries: int = -1
    """Queries read from one connection before it is closed; -1 for no limit."""
    pipeline: int = 100
    """Queries of one connection waiting on plugins at once; beyond it, reading pauses."""
    write_queue: int = 65536
    """Bytes of replies waiting to be written; beyond it, reading pauses."""

    def with_timeouts(self, *settings: TcpTimeouts) -> TcpLimits:
        """These limits with what the Corefile sets; a later setting wins (as CoreDNS)."""
        limits = self
        for s in settings:
            limits = replace(
                limits,
                read=limits.read if s.read is None else s.read,
                write=limits.write if s.write is None else s.write,
                idle=limits.idle if s.idle is None else s.idle,
                max_queries=limits.max_queries if s.max_queries is None else s.max_queries,
            )
        return limits


class Framer:
    """Splits a TCP byte stream into DNS messages (each after a 2-byte length)."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._start = 0

    def feed(self, data: bytes) -> None:
        if self._start:
            # Only the start of a message is left: keep it in a fresh, small buffer.
            self._buf = self._buf[self._start :]
            self._start = 0
        self._buf += data

    def next_message(self) -> bytes | None:
        """The next complete message, or None until more bytes come."""
        buf, start = self._buf, self._start
        if len(buf) - start < 2:
            return None
        end = start + 2 + ((buf[start] << 8) | buf[start + 1])
        if len(buf) < end:
            return None
        message = bytes(memoryview(buf)[start + 2 : end])
        if end == len(buf):
            self._buf = bytearray()  # let a large message's memory go
            self._start = 0
        else:
            self._start = end
        return message

    @property
    def partial(self) -> bool:
        """True when bytes of a message not yet complete are held."""
        return len(self._buf) > self._start


class TcpServing(Protocol):
    """What a connection needs of its listener (the DnsListener)."""

    tcp_limits: TcpLimits

    def handle_tcp(
        self, data: bytes, client: tuple[str, int], local: tuple[str, int]
    ) -> bytes | Request | None:
        """``Dispatcher.handle`` for TCP: reply bytes, a Request to await, or None."""
        ...

    def spawn(self, nursery: trio.Nursery, request: Request, send: Send) -> None:
        """Answer ``request`` in a task; ``send`` is called exactly once with the reply."""
        ...


class TcpConnection:
    """One client's DNS-over-TCP connection (see the module's docstring)."""

    def __init__(
        self,
        serving: TcpServing,
        stream: trio.SocketStream,
        client: tuple[str, int],
        local: tuple[str, int],
    ) -> None:
        self.serving = serving
        self.stream = stream
        self.client = client
        self.local = local
        self.in_flight = 0
        """Queries read whose reply is not queued yet (waiting on plugins)."""
        self.queued = 0
        """Bytes of replies queued and not yet written."""
        self._queue: deque[bytes] = deque()
        self._clock = ReadClock(serving.tcp_limits.read, serving.tcp_limits.idle, 0.0)
        self._read_scope: trio.CancelScope | None = None
        self._stopping = False
        self._reading_done = False
        self._closed = False
        self._room = trio.Event()
        self._wake_writer = trio.Event()
        self._tasks: trio.Nursery | None = None

    @property
    def busy(self) -> bool:
        """Replies still owed to the client: the silence is ours, not the client's."""
        return self.in_flight > 0 or self.queued > 0

    async def run(self) -> None:
        """Serve the connection until the client is done or the limits end it."""
        try:
            async with trio.open_nursery() as tasks:
                self._tasks = tasks
                tasks.start_soon(self._write_loop)
                await self._read_loop()
                # Reading is over: the writer ends the connection once every reply
                # owed is written (or a write times out).
                self._reading_done = True
                self._wake_writer.set()
        finally:
            self._closed = True

    def stop_reading(self) -> None:
        """Read no more queries (server stopping); answer those read, then close."""
        self._stopping = True
        self._room.set()
        if self._read_scope is not None:
            self._read_scope.cancel()

    # -- Reading -------------------------------------------------------------------

    async def _read_loop(self) -> None:
        framer = Framer()
        clock = self._clock
        clock.accepted_at = clock.last_activity = trio.current_time()
        queries = 0
        try:
            while not self._stopping:
                limits = self.serving.tcp_limits
                clock.read, clock.idle = limits.read, limits.idle
                # Take buffered messages while there is room for their answers.
                while self._has_room(limits):
                    message = framer.next_message()
                    if message is None:
                        break
                    clock.message_done(trio.current_time())
                    self._dispatch(message)
                    queries += 1
                    if queries == limits.max_queries:
                        return
                if not self._has_room(limits):
                    self._room = trio.Event()
                    await self._room.wait()
                    continue
                clock.received(trio.current_time(), framer.partial)
                with trio.CancelScope(deadline=clock.deadline(self.busy)) as scope:
                    self._read_scope = scope
                    chunk = await self.stream.receive_some(RECV_STEP)
                self._read_scope = None
                if scope.cancelled_caught:
                    if trio.current_time() < clock.deadline(self.busy):
                        continue  # the deadline moved (replies were written)
                    return  # too slow or idle too long
                if not chunk:
                    return  # the client closed its side
                framer.feed(chunk)
        except CLIENT_GONE:
            self._abort()

    def _has_room(self, limits: TcpLimits) -> bool:
        return self.in_flight < limits.pipeline and self.queued < limits.write_queue

    def _dispatch(self, data: bytes) -> None:
        result = self.serving.handle_tcp(data, self.client, self.local)
        if type(result) is bytes:
            if result:
                self._queue_reply(result)
        elif result is not None:
            assert self._tasks is not None and not isinstance(result, bytes)
            self.in_flight += 1
            self.serving.spawn(self._tasks, result, self._answered)

    async def _answered(self, wire: bytes) -> None:
        """A reply that had to wait on a plugin (or the deadline's SERVFAIL)."""
        self.in_flight -= 1
        if wire:
            self._queue_reply(wire)
        self._changed()

    def _queue_reply(self, wire: bytes) -> None:
        if self._closed:
            return
        framed = struct.pack(">H", len(wire)) + wire
        self._queue.append(framed)
        self.queued += len(framed)
        self._wake_writer.set()

    def _changed(self) -> None:
        """Room or busyness changed: wake the reader, move its deadline."""
        self._room.set()
        if self._reading_done and not self.busy:
            self._wake_writer.set()
        scope = self._read_scope
        if scope is not None:
            scope.deadline = self._clock.deadline(self.busy)

    # -- Writing -------------------------------------------------------------------

    async def _write_loop(self) -> None:
        try:
            while True:
                if not self._queue:
                    if self._reading_done and not self.busy:
                        break  # everything owed is written
                    self._wake_writer = trio.Event()
                    await self._wake_writer.wait()
                    continue
                batch = [self._queue.popleft()]
                size = len(batch[0])
                while self._queue and size < WRITE_BATCH:
                    batch.append(self._queue.popleft())
                    size += len(batch[-1])
                with trio.move_on_after(self.serving.tcp_limits.write):
                    await self.stream.send_all(b"".join(batch) if len(batch) > 1 else batch[0])
                    self.queued -= size
                    self._clock.wrote(trio.current_time())
                    self._changed()
                    continue
                break  # the client does not read: close the connection
        except CLIENT_GONE:
            pass
        self._abort()

    def _abort(self) -> None:
        """End the connection now: reading, writing and its queries' tasks."""
        self._closed = True
        self._queue.clear()
        if self._tasks is not None:
            self._tasks.cancel_scope.cancel()
