"""UDP servers for tests: a plain one, and an upstream that holds its replies on cue."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager

import dns.message
import trio

from pycorefile.testing import Upstream

Handler = Callable[[trio.socket.SocketType, bytes, tuple[str, int]], Awaitable[None]]
"""``handle(sock, datagram, sender)``: answer one datagram (through ``sock``)."""


@asynccontextmanager
async def udp_server(
    host: str, handle: Handler, *, arrived: Callable[[bytes], bool] | None = None
) -> AsyncIterator[int]:
    """A UDP socket on ``host`` (a free port, yielded) whose every datagram is handled in a
    task of its own, until the block ends.

    ``arrived(datagram)`` is called first, in the order datagrams arrive; False drops it.
    """
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        await sock.bind((host, 0))

        async def serve(nursery: trio.Nursery) -> None:
            while True:
                data, sender = await sock.recvfrom(65535)
                if arrived is None or arrived(data):
                    nursery.start_soon(handle, sock, data, sender)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve, nursery)
            try:
                yield sock.getsockname()[1]
            finally:
                nursery.cancel_scope.cancel()


class HeldUpstream:
    """A UDP upstream that notes each query as it arrives and, while ``holding``,
    keeps the reply until ``release`` is set: queries stuck at the upstream, on cue.
    """

    def __init__(
        self, records: Mapping[tuple[str, str], list[str]], host: str = "127.0.0.1"
    ) -> None:
        self.host = host
        self.brain = Upstream(records=dict(records))
        self.holding = False
        self.release = trio.Event()
        self.arrived: list[str] = []
        """The question name of every query, when it arrived."""
        self.port = 0

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @asynccontextmanager
    async def running(self) -> AsyncIterator[HeldUpstream]:
        async with udp_server(self.host, self._reply, arrived=self._arrived) as port:
            self.port = port
            yield self

    def _arrived(self, data: bytes) -> bool:
        try:
            name = dns.message.from_wire(data).question[0].name.to_text().lower()
        except Exception:
            return False
        self.arrived.append(name)
        return True

    async def _reply(
        self, sock: trio.socket.SocketType, data: bytes, client: tuple[str, int]
    ) -> None:
        if self.holding:
            await self.release.wait()
        reply = self.brain.respond(data, "udp")
        if reply is not None:
            await sock.sendto(reply, client)


# -- Many queries at once, from one socket ------------------------------------------------
