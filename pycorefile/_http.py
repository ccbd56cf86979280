"""A small HTTP/1.1 responder for the operational endpoints (metrics, health, ready).

One listener per address; plugins add routes to it at setup (``HttpHandler``,
in ``_types``). It reads one
request per connection turn, answers, and keeps the connection for the next
request until the client closes or goes idle. Its connections count against
the process's connection budget (``_conn``) and have deadlines (``HttpLimits``).
"""

from __future__ import annotations

import logging
import socket
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import trio

from ._conn import ConnectionBudget, ReadClock, Slots, accept_connections
from ._types import HttpHandler, HttpRequest, HttpResponse

log = logging.getLogger("pycorefile")


@dataclass(frozen=True)
class HttpLimits:
    """What one connection to an HTTP endpoint may take."""

    head: float = 10.0
    """Seconds to receive a request head (the first: counted from the accept)."""
    idle: float = 30.0
    """Seconds a kept-alive connection may wait for its next request."""
    write: float = 10.0
    """Seconds the client has to take a response; longer closes the connection."""
    max_head: int = 16384
    """Bytes of a request head (request line and headers); more closes the connection."""


_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
    400: "Bad Request",
}


def parse_head(data: bytes) -> HttpRequest:
    """Parse a request line and headers (the body is never needed here)."""
    lines = data.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise ValueError("bad request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ValueError("bad header line")
        headers[name.strip().lower()] = value.strip()
    url = urlsplit(parts[1])
    return HttpRequest(parts[0].upper(), url.path or "/", parse_qs(url.query), headers)


def render(response: HttpResponse, head_only: bool = False) -> bytes:
    reason = _REASONS.get(response.status, "")
    lines = [
        f"HTTP/1.1 {response.status} {reason}",
        f"Content-Type: {response.content_type}",
        f"Content-Length: {len(response.body)}",
    ]
    lines += [f"{k}: {v}" for k, v in response.headers]
    head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    return head if head_only else head + response.body


class HttpListener:
    """Serves the routes of whichever configuration is current."""

    def __init__(
        self,
        sock: socket.socket,
        address: tuple[str, int],
        slots: Slots | None = None,
        limits: HttpLimits | None = None,
    ) -> None:
        self.sock = sock
        self.address = address
        self.slots = slots or ConnectionBudget.of().http
        """Connections it may hold: the HTTP share of the process's budget."""
        self.limits = limits or HttpLimits()
        self.routes: dict[str, HttpHandler] = {}
        self.scope = trio.CancelScope()

    async def serve(self) -> None:
        host, port = self.address
        what = f"http {host}:{port}" if port else f"http {host}"
        try:
            with self.scope:
                async with trio.open_nursery() as nursery:
                    await accept_connections(self.sock, self.slots, self._connection, nursery, what)
        finally:
            self.sock.close()

    def close(self) -> None:
        """Stop serving; the socket is closed by the serving task."""
        self.scope.cancel()

    async def _connection(self, stream: trio.SocketStream) -> None:
        """Requests one after the other until the client closes, idles or is too slow."""
        limits = self.limits
        clock = ReadClock(limits.head, limits.idle, trio.current_time())
        buf = b""
        while True:
            while b"\r\n\r\n" not in buf:
                if len(buf) >= limits.max_head:
                    return
                clock.received(trio.current_time(), bool(buf))
                with trio.move_on_at(clock.deadline(busy=False)):
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        return
                    buf += chunk
                    continue
                return  # no complete request head in time
            head, _, buf = buf.partition(b"\r\n\r\n")
            clock.message_done(trio.current_time())
            try:
                request = parse_head(head)
            except ValueError:
                await self._send(stream, render(HttpResponse(400, b"bad request\n")))
                return
            response = await self._respond(request)
            if not await self._send(stream, render(response, request.method == "HEAD")):
                return
            clock.wrote(trio.current_time())
            if request.headers.get("connection", "").lower() == "close":
                return

    async def _send(self, stream: trio.SocketStream, data: bytes) -> bool:
        """Write a response; False when the client did not take it in time."""
        with trio.move_on_after(self.limits.write):
            await stream.send_all(data)
            return True
        return False

    async def _respond(self, request: HttpRequest) -> HttpResponse:
        handler = self.routes.get(request.path)
        if handler is None:
            return HttpResponse(404, b"404 page not found\n")
        if request.method not in ("GET", "HEAD"):
            return HttpResponse(405, b"method not allowed\n")
        try:
            return await handler(request)
        except Exception:
            log.exception("http handler for %s failed", request.path)
            return HttpResponse(500, b"internal error\n")
