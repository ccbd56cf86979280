"""The loop plugin: sends a probe to its own server and stops the server if it loops.

Its place in the chain is CoreDNS's (just before *forward*): the probe is
counted when it reaches that point, which it does once when sent, and again
each time an upstream sends it back to us. The third sighting is a loop: it is
logged, the probe gets SERVFAIL (which ends the loop), and ``run`` stops the
server (CoreDNS exits at once, ``log.Fatal``). Every other query passes on.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence

import dns.rdatatype
import trio

from pycorefile import Directive, Plugin, PluginError, Request, Result, SetupContext
from pycorefile.plugin import StartupError
from pycorefile.wire import FLAG_QR, WireError, read_query

from . import _probe
from ._parse import parse_loop
from ._probe import Probe, probe_name, probe_query

log = logging.getLogger("pycorefile")

_HINFO = dns.rdatatype.HINFO


class LoopPlugin(Plugin):
    """CoreDNS's loop: one probe at start (and reload) through the block's own address."""

    def __init__(self, zone: str, ctx: SetupContext | None = None) -> None:
        self.probe = Probe(zone, probe_name(zone))
        self.ctx = ctx
        self.target = ""
        """Where the probe is sent (``host:port``), once it is."""

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> LoopPlugin:
        return cls(parse_loop(directives[0], ctx.zones), ctx)

    @property
    def loop_error(self) -> str | None:
        """The loop found, if any."""
        return self.probe.error

    def handle(self, request: Request) -> Result:
        probe = self.probe
        if (
            request.qtype == _HINFO
            and probe.armed
            and request.name == probe.name
            and probe.seen(_address(request.client[0], request.client[1]), self.target)
        ):
            if probe.sightings == _probe.LOOP_AFTER + 1:
                log.error("plugin/loop: %s", probe.error)  # once: the server is stopping
            raise PluginError(f"forwarding loop: HINFO {request.name} came back")
        return self.next.handle(request)

    async def run(self) -> None:
        """Send the probe until it is answered (30 s at most); stop the server on a loop."""
        probe = self.probe
        if probe.name is None or self.ctx is None:
            if probe.name is None:
                log.warning("plugin/loop: zone %s leaves no room for a probe name", probe.zone)
            return
        host, port = self.ctx.own_address()
        self.target = _address(host, port)
        query = probe_query(probe.name)

        async def send() -> bool:
            return await exchange(query, host, port, _probe.EXCHANGE_TIMEOUT)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(probe.watch, send)
            await probe.found.wait()
            nursery.cancel_scope.cancel()
        raise StartupError(f"plugin/loop: {probe.error}")


def _address(host: str, port: int) -> str:
    """``host:port`` as Go writes it (``[::1]:53`` for IPv6)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def exchange(query: bytes, host: str, port: int, timeout: float) -> bool:
    """Send ``query`` over UDP and wait for a reply with its ID: True if one came in time."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with trio.socket.socket(family, socket.SOCK_DGRAM) as sock, trio.move_on_after(timeout):
        try:
            await sock.connect((host, port))
            await sock.send(query)
            while True:
                data = await sock.recv(65535)
                try:
                    reply = read_query(data)
                except WireError:
                    continue
                if data[:2] == query[:2] and reply.flags & FLAG_QR:
                    return True
        except OSError:
            return False
    return False
