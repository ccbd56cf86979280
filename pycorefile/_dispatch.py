"""The socket-free front of serving: checking a packet, routing it, answering it.

Per query, ``Dispatcher.handle`` (no I/O) checks the packet and routes it to a
server block; a known answer (a cache hit, a table answer) is taken before any
Request is made when the block allows it, else the chain's ``handle`` runs
synchronously. What it returns is the reply to send, a Request whose chain
must be waited for (``answer``, in a task of the listener's), or None to drop
the packet. The listeners (``_server``) feed it bytes and send what it gives
back; nothing here touches a socket.
"""

from __future__ import annotations

import logging
import struct
import time
from dataclasses import dataclass, field
from typing import Final

import dns.exception
import dns.message
import dns.rcode

from . import _wire
from ._config import BlockRoute
from ._contract import STACKTRACE, plugin_of, settle, then
from ._request import FailureObserver, ReplyObserver, Request, parse_question
from ._types import Client, KnownAnswer, Pending, Reply, Result
from .plugin import PluginError

# Offsets into the fields ``parse_question`` reads (see ``_wire.QueryFields``).
_FLAGS: Final = 1
_NAME_END: Final = 4
_QTYPE: Final = 5
_QCLASS: Final = 6
_EDNS: Final = 7
_PAYLOAD: Final = 8
_VERSION: Final = 9
_DO: Final = 10
_SIMPLE: Final = 11

log = logging.getLogger("pycorefile")

BADVERS = 16


@dataclass
class Dispatcher:
    """Checks a packet and routes it to a server block: the I/O-free front of serving."""

    routes: dict[bytes, BlockRoute] = field(default_factory=dict)
    observers: list[ReplyObserver] = field(default_factory=list)
    udp_cap: int = _wire.OUR_PAYLOAD
    failure_observers: list[FailureObserver] = field(default_factory=list)

    def handle(
        self, data: bytes, client: tuple[str, int], proto: str, local: tuple[str, int] | None
    ) -> bytes | Request | None:
        """Answer a packet if that needs no waiting.

        Returns the reply to send, a Request whose chain must be awaited
        (``answer``), or None to drop the packet. This is the hot path: one
        call per query, the common case first.
        """
        try:
            parsed = fields, key = parse_question(data)
        except _wire.QuestionError:
            return _wire.error_reply(data, None, dns.rcode.FORMERR)
        except _wire.WireError:
            return None
        plain = fields[_SIMPLE] and not fields[_FLAGS] & 0xF800 and not fields[_VERSION]
        route: BlockRoute | None = None
        if plain:
            route = self._only_root or self.route(key, fields[_NAME_END] - 12)
            # The fast path: a query that the chain's first plugin answers from
            # memory (a cache hit, a mesh name) is answered with no Request.
            if route is not None and fields[_QCLASS] == 1:
                known = route.known
                if known is not None:
                    fast = self._known(data, client, proto, fields, key, route, known)
                    if fast is not None:
                        return fast
        request = Request(data, client, proto, local, self.udp_cap, parsed)
        if not plain:
            refusal = self._unusual(data, request)
            if refusal is not None:
                return refusal or None
            route = self._only_root or self.route(key, request.name_end - 12)
        if route is not None and route.selective:
            route = self.select(request)
        if route is None:
            return self.finish(request, request.error(dns.rcode.REFUSED))
        request.route = route
        request.resolver = self
        config = route.config
        if config.udp_cap is not None:
            request.limit_payload(config.udp_cap)
        if request.qclass != 1 and not config.any_class:
            return self.finish(request, request.error(dns.rcode.REFUSED))
        try:
            reply = config.chain.handle(request)
        except Exception as exc:
            reply = self.failed(request, exc)
        if type(reply) is Pending:
            request.pending = reply
            return request
        return self.finish(request, reply)  # type: ignore[arg-type]

    def _known(
        self,
        data: bytes,
        client: Client,
        proto: str,
        fields: _wire.QueryFields,
        key: bytes,
        route: BlockRoute,
        known: KnownAnswer,
    ) -> bytes | None:
        """The fast path's reply, sized for the client and observed; None to take the chain."""
        started = time.perf_counter()
        name_end, edns, do = fields[_NAME_END], fields[_EDNS], fields[_DO]
        try:
            reply = known(data, key, name_end, edns, do, route.server)
        except Exception:
            return None  # the chain runs, fails the same way, and reports it
        if reply is None:
            return None
        if len(reply) > 512:  # every client takes 512 bytes
            cap = route.config.udp_cap
            limit = _wire.reply_limit(
                proto, edns, fields[_PAYLOAD], self.udp_cap if cap is None else cap
            )
            if len(reply) > limit:
                reply = _wire.fit_reply(reply, limit)
        answered_by = route.config.known_by
        asked = len(data)
        for observer in self.observers:
            try:
                observer.observe_known(
                    route, proto, client, fields[_QTYPE], do, answered_by, asked, reply, started
                )
            except Exception as exc:
                request = Request(data, client, proto, None, self.udp_cap)
                request.route = route
                self._observer_failed(observer, request, exc)
        return reply

    @staticmethod
    def _unusual(data: bytes, info: _wire.QueryInfo) -> bytes | None:
        """The reply (b'' to drop) for packets that are not a plain query, else None."""
        if info.flags & _wire.FLAG_QR:
            return b""  # a response sent to us: never answer it (no reflection loops)
        if info.opcode != 0:
            # Header only: an unknown opcode's sections need not look like a question.
            return _wire.error_reply(data, None, dns.rcode.NOTIMP)
        if info.qdcount != 1:
            return _wire.error_reply(data, info, dns.rcode.FORMERR)
        if not info.simple:
            try:
                dns.message.from_wire(data)
            except (dns.exception.DNSException, ValueError, struct.error):
                return _wire.error_reply(data, info, dns.rcode.FORMERR)
        if info.edns_version > 0:
            return _wire.error_reply(data, info, BADVERS)
        return None

    def __post_init__(self) -> None:
        self._failed_observers: set[int] = set()
        """The ids of the reply observers that raised (each is logged once)."""
        # One block for the root zone is the usual sidecar set-up: skip the walk.
        only = list(self.routes.values())
        self._only_root = only[0] if len(only) == 1 and b"\x00" in self.routes else None

    def route(self, key: bytes, name_len: int) -> BlockRoute | None:
        """The server block with the longest zone containing the (lowercased) name."""
        if self._only_root is not None:
            return self._only_root
        routes = self.routes
        pos = 0
        while True:
            route = routes.get(key[pos:name_len])
            if route is not None:
                return route
            length = key[pos]
            if length == 0:
                return None
            pos += length + 1

    def resolve(self, request: Request) -> Result:
        """A question a plugin asks the server (``plugin.lookup``): routed and answered as a
        client's would be, by the block of the longest zone, but not sized for a client
        nor told to the observers. Never raises: a failure is its error reply.
        """
        route = self.route(request.key, request.name_end - _wire.HEADER_LEN)
        if route is not None and route.selective:
            route = self.select(request)  # a view's filters see the looked-up question
        if route is None:
            return request.error(dns.rcode.REFUSED)
        request.route = route
        request.resolver = self
        if request.qclass != 1 and not route.config.any_class:
            return request.error(dns.rcode.REFUSED)
        try:
            result = route.config.chain.handle(request)
        except Exception as exc:
            return self.failed(request, exc)
        if type(result) is Pending:
            return then(result, None, lambda exc: self.failed(request, exc))
        return result

    def select(self, request: Request) -> BlockRoute | None:
        """The block for a query where blocks with filters share zones (the view plugin).

        The most specific zone first; its blocks in Corefile order; the first
        that admits the query takes it. None when no block does (REFUSED).
        """
        key, name_len = request.key, request.name_end - _wire.HEADER_LEN
        pos = 0
        while True:
            route = self.routes.get(key[pos:name_len])
            while route is not None:
                if route.config.admits(request):
                    return route
                route = route.alternative
            length = key[pos]
            if length == 0:
                return None
            pos += length + 1

    async def answer(self, request: Request) -> bytes:
        """Run the chain with waiting allowed (the listener cancels it at the query deadline)."""
        pending, request.pending = request.pending, None
        assert pending is not None, "answer() is for a query whose chain returned Pending"
        try:
            reply = await settle(pending)
        except Exception as exc:
            reply = self.failed(request, exc)
        return self.finish(request, reply)

    def refuse(self, request: Request) -> bytes:
        """REFUSED for a query that would wait while too many already do."""
        pending, request.pending = request.pending, None
        if pending is not None:
            pending.discard()
        return self.finish(request, request.error(dns.rcode.REFUSED))

    def failed(self, request: Request, exc: Exception) -> bytes:
        """A plugin raised: answer its rcode (PluginError) or log a panic and answer SERVFAIL.

        A ``PluginError`` is an expected failure (CoreDNS's ``return rcode,
        err``): the client gets its rcode and only the errors plugin, when
        configured, logs it. Anything else is a bug in a plugin.
        """
        if isinstance(exc, PluginError):
            request.answered_by = ""  # no plugin wrote the reply: CoreDNS's plugin=""
            return request.error(exc.rcode)
        name = plugin_of(exc) or "?"
        log.error(
            "plugin/%s: %s %s: %s: %s",
            name,
            request.name,
            request.type_name,
            type(exc).__name__,
            exc,
            exc_info=getattr(exc, STACKTRACE, False) or log.isEnabledFor(logging.DEBUG),
        )
        request.answered_by = name
        self._panicked(request, exc)
        return request.error(dns.rcode.SERVFAIL)

    def _panicked(self, request: Request, exc: Exception) -> None:
        """Tell the failure observers (the panic count); one that raises is ignored."""
        for observe in self.failure_observers:
            try:
                observe(request, exc)
            except Exception:
                log.debug("a failure observer raised", exc_info=True)

    def _observer_failed(self, observer: ReplyObserver, request: Request, exc: Exception) -> None:
        """A reply observer (metrics) raised: the reply is sent all the same, the failure
        is counted as a panic, and logged once per observer (it may fail on every reply)."""
        if id(observer) not in self._failed_observers:
            self._failed_observers.add(id(observer))
            log.error(
                "reply observer %s failed (logged once): %s: %s",
                type(observer).__name__,
                type(exc).__name__,
                exc,
                exc_info=True,
            )
        self._panicked(request, exc)

    def finish(self, request: Request, reply: Reply) -> bytes:
        """Size the reply for the client and tell the observers (metrics).

        An empty reply (``DROP``) stays empty: nothing is sent.
        """
        if type(reply) is bytes and len(reply) <= request.max_size:
            wire = reply
        else:
            try:
                wire = request.to_wire(reply)
            except Exception as exc:
                log.error("cannot render reply to %s %s: %s", request.name, request.type_name, exc)
                wire = request.error(dns.rcode.SERVFAIL)
        for observer in self.observers:
            try:
                observer.observe(request, wire)
            except Exception as exc:
                self._observer_failed(observer, request, exc)
        return wire
