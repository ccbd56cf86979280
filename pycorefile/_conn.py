"""What every accepted TCP connection shares, DNS and HTTP alike.

- The open-file limit: raised to the hard limit at startup, as Go (and so
  CoreDNS) does, and the connection budget derived from it.
- ``ConnectionBudget``: one count of connections for the whole process, split
  between the DNS listeners and the HTTP endpoints; beyond it a new connection
  is closed at once.
- ``accept_connections``: the accept loop of every listener, taking a burst
  of connections at once. Running out of files or memory pauses accepting
  (logged once per burst); a connection's handler that fails costs that
  connection only.
- ``ReadClock``: when reading a connection gives up, per message and not per
  read (no slowloris).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import math
import resource
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import trio

log = logging.getLogger("pycorefile")

MAX_CONNECTIONS = 1000
"""Default budget of open TCP connections (DNS and HTTP) of one process."""
MAX_HTTP_CONNECTIONS = 64
"""Default share of the budget kept for the HTTP endpoints."""
FILE_RESERVE_MIN = 64
"""Files never spent on client connections: listeners, upstream sockets, files read."""

ACCEPT_PAUSE_MIN = 0.1
ACCEPT_PAUSE_MAX = 1.0
ACCEPT_LOG_INTERVAL = 10.0
"""A new burst of failed accepts is logged at most this often."""

CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
"""accept() errors that say "not now": out of files or memory."""
CONNECTION_ERRNOS = frozenset(
    getattr(errno, name)
    for name in ("ECONNABORTED", "ECONNRESET", "EPROTO", "EPERM", "ETIMEDOUT", "EHOSTUNREACH",
                 "ENETUNREACH", "ENETDOWN", "EHOSTDOWN", "ENONET", "ENOPROTOOPT", "EOPNOTSUPP")
    if hasattr(errno, name)
)  # fmt: skip
"""accept() errors of one connection (gone before it was taken): the next is taken."""
ACCEPT_BATCH = 64
"""Connections taken per wakeup of an accept loop. Taking one per turn of the event loop
(as ``trio.SocketListener`` does) left a burst of connections waiting in the kernel's
backlog for seconds while the UDP listener kept the loop busy."""


def open_file_limit() -> int:
    """The soft limit of open files of this process."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return soft if soft != resource.RLIM_INFINITY else 1 << 20


def raise_open_file_limit() -> int:
    """Raise the soft open-file limit to the hard limit (as Go does); return the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        # A hard limit the kernel will not take ("unlimited"): the soft one stays.
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return open_file_limit()


def connection_budget(max_connections: int, file_limit: int) -> int:
    """Connections the process may hold: ``max_connections``, lowered to fit the file limit.

    A reserve of ``max(64, file_limit / 4)`` files is kept for what is not a
    client connection (listening sockets, upstream sockets, files read).
    """
    reserve = max(FILE_RESERVE_MIN, file_limit // 4)
    return max(2, min(max_connections, file_limit - reserve))


@dataclass
class Slots:
    """Open connections of one kind against their limit."""

    limit: int
    used: int = 0
    refused: int = 0
    """Connections closed at once because every slot was taken."""

    def take(self) -> bool:
        if self.used >= self.limit:
            self.refused += 1
            return False
        self.used += 1
        return True

    def release(self) -> None:
        self.used -= 1


@dataclass
class ConnectionBudget:
    """One budget of connections for every listener of a process.

    The HTTP endpoints keep their share (so a flood of DNS connections cannot
    fail a health check), DNS over TCP has the rest; together they never hold
    more than the total.
    """

    dns: Slots
    http: Slots

    @classmethod
    def of(
        cls,
        max_connections: int = MAX_CONNECTIONS,
        max_http: int = MAX_HTTP_CONNECTIONS,
        file_limit: int | None = None,
    ) -> ConnectionBudget:
        total = connection_budget(
            max_connections, open_file_limit() if file_limit is None else file_limit
        )
        http = max(1, min(max_http, total // 4))
        return cls(Slots(total - http), Slots(http))

    @property
    def total(self) -> int:
        return self.dns.limit + self.http.limit


class AcceptPause:
    """How long to wait after a failed accept, and when to say so (sans-IO).

    The pause doubles from 0.1 s to 1 s while accepts keep failing; the first
    failure of a burst is logged (at most once per 10 s), the others counted.
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.failures = 0
        self.total_failures = 0
        self._logged_at = -math.inf

    def failed(self, exc: OSError, now: float) -> float:
        """Note a failed accept; return the seconds to wait before the next one."""
        if self.failures == 0 and now - self._logged_at >= ACCEPT_LOG_INTERVAL:
            self._logged_at = now
            reason = exc.strerror or str(exc)
            log.warning(
                "%s: cannot accept connections (%s); pausing and retrying", self.what, reason
            )
        self.failures += 1
        self.total_failures += 1
        pause: float = ACCEPT_PAUSE_MIN * 2.0 ** (self.failures - 1)
        return min(ACCEPT_PAUSE_MAX, pause)

    def succeeded(self) -> None:
        self.failures = 0


Handler = Callable[[trio.SocketStream], Awaitable[None]]

CLIENT_GONE = (trio.BrokenResourceError, trio.ClosedResourceError, OSError)
"""What a client that resets or vanishes raises: expected, never logged."""


async def accept_connections(
    sock: socket.socket,
    slots: Slots,
    handler: Handler,
    nursery: trio.Nursery,
    what: str,
) -> None:
    """Accept connections on the listening ``sock`` for ``handler`` until cancelled or closed.

    Each time the socket is readable, up to ``ACCEPT_BATCH`` connections are
    taken without yielding to the event loop, as the UDP listener drains its
    datagrams. A connection beyond ``slots`` is closed at once.
    """
    pause = AcceptPause(what)
    sock.setblocking(False)
    while sock.fileno() != -1:
        await trio.lowlevel.wait_readable(sock)
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _address = sock.accept()
            except BlockingIOError:
                break
            except OSError as exc:
                if sock.fileno() == -1:
                    return
                if exc.errno in CONNECTION_ERRNOS:
                    continue
                if exc.errno not in CAPACITY_ERRNOS:
                    log.debug("%s: accept failed: %s", what, exc)
                await trio.sleep(pause.failed(exc, trio.current_time()))
                break
            pause.succeeded()
            if not slots.take():
                conn.close()
                continue
            stream = trio.SocketStream(trio.socket.from_stdlib_socket(conn))
            nursery.start_soon(_guarded, handler, stream, slots, what)


async def _guarded(handler: Handler, stream: trio.SocketStream, slots: Slots, what: str) -> None:
    """Run one connection's handler: whatever it raises ends this connection only.

    Trio's nurseries wrap errors in exception groups, so a reset deep inside a
    handler may arrive here as ``ExceptionGroup([BrokenResourceError])``:
    ``except*`` takes the group apart.
    """
    try:
        await handler(stream)
    except* CLIENT_GONE:
        pass  # the client reset or vanished
    except* Exception:
        log.exception("%s: a connection failed", what)
    finally:
        slots.release()
        stream.socket.close()


@dataclass
class ReadClock:
    """Deadlines for reading one connection's messages (DNS over TCP, HTTP requests).

    The first message must be complete within ``read`` of the accept; each
    later one within ``read`` of its first byte; between messages the client
    may stay silent for ``idle``, counted from the last message read or reply
    written, and for as long as the connection is busy (answers of its own
    still to come or to be written). A client sending a byte now and then
    therefore holds its slot for ``read`` at most, not forever.
    """

    read: float
    idle: float
    accepted_at: float
    messages: int = 0
    partial_since: float | None = None
    last_activity: float = 0.0

    def deadline(self, busy: bool) -> float:
        if self.messages == 0:
            return self.accepted_at + self.read
        if self.partial_since is not None:
            return self.partial_since + self.read
        if busy:
            return math.inf
        return self.last_activity + self.idle

    def received(self, now: float, partial: bool) -> None:
        """Bytes were read; ``partial`` when they hold the start of a message not yet complete."""
        if not partial:
            self.partial_since = None
        elif self.partial_since is None:
            self.partial_since = now

    def message_done(self, now: float) -> None:
        """A whole message was taken from what was read."""
        self.messages += 1
        self.last_activity = now
        self.partial_since = None

    def wrote(self, now: float) -> None:
        """A reply was written: the connection was not idle."""
        self.last_activity = now
