"""The I/O layer: trio listeners for UDP and TCP, reload, shutdown.

A listener drains its sockets and hands each packet to its ``Dispatcher``
(``_dispatch``, no I/O), which answers a query that needs no waiting at once,
so that reply is sent straight from the socket-draining loop. Only a query
some plugin must wait for (forwarding) gets a task, which awaits its
``Pending`` once.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
import sys
from dataclasses import dataclass, field
from typing import Any

import dns.rcode
import trio

from . import _wire
from ._config import Config
from ._conn import MAX_CONNECTIONS, MAX_HTTP_CONNECTIONS, ConnectionBudget, accept_connections
from ._dispatch import Dispatcher
from ._http import HttpLimits, HttpListener
from ._request import Request
from ._tcp import Send, TcpConnection, TcpLimits
from ._types import HttpHandler, ListenerKey
from .plugin import BOUND_PORTS, StartupError

__all__ = ["DnsListener", "Server", "ServerOptions", "StartupError"]

log = logging.getLogger("pycorefile")

RECV_BATCH = 256
"""Datagrams drained per readiness wakeup before yielding to other tasks."""
RECV_BUFFER = 4 * 1024 * 1024
QUERY_DEADLINE = 10.0
"""A query still unanswered after this long gets SERVFAIL."""
BUCKET_WIDTH = 0.1
"""Seconds of arrivals whose waits share one deadline (and one cancel scope): a
query's deadline is kept to within this (or a tenth of the deadline, if less)."""
SEND_GRACE = 1.0
"""Seconds a SERVFAIL for a query past its deadline may take to be handed to its socket."""
MAX_IN_FLIGHT = 10000
"""Queries waiting on a plugin (forwarding) at once, per listener; beyond it, REFUSED at once."""


@dataclass
class ServerOptions:
    """Limits of the serving layer (not per plugin); docs/reliability.md lists them all."""

    query_deadline: float = QUERY_DEADLINE
    max_in_flight: int = MAX_IN_FLIGHT
    tcp: TcpLimits = field(default_factory=TcpLimits)
    """Per DNS-over-TCP connection; the Corefile's timeouts plugin overrides the timeouts."""
    max_connections: int = MAX_CONNECTIONS
    """TCP connections (DNS and HTTP) of the process, lowered to fit the open-file limit."""
    max_http_connections: int = MAX_HTTP_CONNECTIONS
    """The HTTP endpoints' share of ``max_connections`` (at most a quarter of it)."""
    http: HttpLimits = field(default_factory=HttpLimits)
    """Per connection to an HTTP endpoint (health, ready, metrics, autoalloc)."""
    udp_cap: int = _wire.OUR_PAYLOAD
    recv_buffer: int = RECV_BUFFER
    reuse_port: bool = False
    """Share DNS ports with sibling processes (SO_REUSEPORT): the ``-workers`` mode."""
    http_socket: str | None = None
    """Serve every HTTP route on this unix socket instead of its address (workers)."""


def _set_recv_buffer(sock: socket.socket, size: int) -> None:
    """Ask for a large receive buffer, beyond rmem_max when we may (root)."""
    force = getattr(socket, "SO_RCVBUFFORCE", 33 if sys.platform.startswith("linux") else None)
    if force is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, force, size)
            return
        except OSError:
            pass  # not privileged: ask within rmem_max instead
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)


def _bind(
    family: int, kind: int, host: str, port: int, recv_buffer: int, reuse_port: bool = False
) -> socket.socket:
    sock = socket.socket(family, kind)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_DGRAM:
            _set_recv_buffer(sock, recv_buffer)
        sock.bind((host, port))
        if kind == socket.SOCK_STREAM:
            sock.listen(1024)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _families(host: str) -> list[tuple[int, str]]:
    if host:
        return [(socket.AF_INET6 if ":" in host else socket.AF_INET, host)]
    out: list[tuple[int, str]] = [(socket.AF_INET, "0.0.0.0")]
    if socket.has_ipv6:
        out.append((socket.AF_INET6, "::"))
    return out


def bind_dns_sockets(
    host: str, port: int, recv_buffer: int, reuse_port: bool = False
) -> list[socket.socket]:
    """UDP and TCP sockets for one listener; port 0 picks one port free for all."""
    families = _families(host)
    for _attempt in range(20):
        socks: list[socket.socket] = []
        chosen = port
        try:
            for family, addr in families:
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    try:
                        sock = _bind(family, kind, addr, chosen, recv_buffer, reuse_port)
                    except OSError as exc:
                        if (
                            family == socket.AF_INET6
                            and not host
                            and exc.errno
                            in (
                                errno.EAFNOSUPPORT,
                                errno.EADDRNOTAVAIL,
                            )
                        ):
                            break  # no IPv6 on this machine: serve IPv4 only
                        raise
                    socks.append(sock)
                    if chosen == 0:
                        chosen = sock.getsockname()[1]
            return socks
        except OSError as exc:
            for s in socks:
                s.close()
            if port == 0 and exc.errno == errno.EADDRINUSE:
                continue
            where = f"[{host}]" if ":" in host else (host or "*")
            raise OSError(exc.errno, f"cannot listen on {where}:{port}: {exc.strerror}") from exc
    raise OSError(errno.EADDRINUSE, "no free port found for all sockets")


class _DeadlineBucket:
    """The queries that started waiting within one short window, cancelled together.

    A cancel scope per query would cost several microseconds on every wait;
    one per window costs nothing per query. Queries that start waiting
    before ``closes`` run in this bucket's nursery, under a cancel scope that
    ends at ``cancel_at`` (``closes`` plus the query deadline): a query's
    deadline is kept to within the window's width (at most ``BUCKET_WIDTH``).
    Queries spawned before the bucket's task runs wait in a list until it does.
    """

    __slots__ = ("cancel_at", "closes", "nursery", "queued")

    def __init__(self, closes: float, cancel_at: float) -> None:
        self.closes = closes
        self.cancel_at = cancel_at
        self.nursery: trio.Nursery | None = None
        self.queued: list[tuple[Any, ...]] = []

    def start(self, *task: Any) -> None:
        """Run ``task`` (an async function and its arguments) in this bucket."""
        if self.nursery is not None:
            self.nursery.start_soon(*task)
        else:
            self.queued.append(task)

    async def run(self) -> None:
        with trio.CancelScope(deadline=self.cancel_at):
            async with trio.open_nursery() as nursery:
                self.nursery = nursery
                for task in self.queued:
                    nursery.start_soon(*task)
                self.queued.clear()
                await trio.sleep_until(self.closes)  # open for new queries until then
        self.nursery = None


class DnsListener:
    """The UDP and TCP sockets of one ``transport://host:port``, shared by blocks."""

    def __init__(
        self,
        key: ListenerKey,
        socks: list[socket.socket],
        options: ServerOptions,
        budget: ConnectionBudget | None = None,
    ):
        self.key = key
        self.socks = socks
        self.options = options
        self.budget = budget or ConnectionBudget.of(
            options.max_connections, options.max_http_connections
        )
        self.dispatcher = Dispatcher(udp_cap=options.udp_cap)
        self.tcp_limits = options.tcp
        """The limits of its TCP connections: the server's, with the Corefile's timeouts."""
        self.accept_scope = trio.CancelScope()
        self.done = trio.Event()
        self.in_flight = 0
        self._buckets: dict[trio.Nursery, _DeadlineBucket] = {}
        """The open deadline bucket of each nursery queries wait in (the listener's for
        UDP, each TCP connection's)."""
        self.connections: set[TcpConnection] = set()
        self.dropped_sends = 0

    @property
    def addresses(self) -> list[tuple[str, str, int]]:
        """``(proto, host, port)`` of every bound socket."""
        out = []
        for s in self.socks:
            host, port = s.getsockname()[:2]
            out.append(("udp" if s.type == socket.SOCK_DGRAM else "tcp", host, port))
        return out

    def use(self, config: Config) -> None:
        """Serve a new configuration from the next packet on (reload)."""
        self.dispatcher = Dispatcher(
            config.routes[self.key],
            config.observers,
            self.options.udp_cap,
            config.failure_observers,
        )
        blocks = {id(r.config): r.config for r in config.routes[self.key].values()}
        self.tcp_limits = self.options.tcp.with_timeouts(
            *(b.tcp_timeouts for b in blocks.values() if b.tcp_timeouts is not None)
        )

    def stop_accepting(self) -> None:
        self.accept_scope.cancel()
        for connection in self.connections:
            connection.stop_reading()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as queries:
                with self.accept_scope:
                    async with trio.open_nursery() as loops:
                        for sock in self.socks:
                            if sock.type == socket.SOCK_DGRAM:
                                loops.start_soon(self._udp_loop, sock, queries)
                            else:
                                loops.start_soon(self._tcp_accept, sock, queries)
                        task_status.started()
        finally:
            for sock in self.socks:
                sock.close()
            self.done.set()

    # -- UDP --------------------------------------------------------------------

    async def _udp_loop(self, sock: socket.socket, queries: trio.Nursery) -> None:
        local = sock.getsockname()[:2]
        recvfrom = sock.recvfrom
        sendto = sock.sendto
        wait_readable = trio.lowlevel.wait_readable
        while True:
            await wait_readable(sock)
            # Drain what is queued without an await per datagram: that is most
            # of the cost of a query in trio. (A reload swaps the dispatcher
            # between batches.)
            handle = self.dispatcher.handle
            for _ in range(RECV_BATCH):
                try:
                    data, client = recvfrom(65535)
                except (BlockingIOError, InterruptedError):
                    break
                except OSError:
                    continue  # e.g. an ICMP error reported on the socket
                result = handle(data, client, "udp", local)
                if type(result) is bytes:
                    if not result:
                        continue  # DROP: a plugin chose not to answer
                    try:
                        sendto(result, client)
                    except OSError:
                        self.dropped_sends += 1
                elif result is not None:
                    self.spawn(queries, result, self._udp_sender(sock, client))

    def _udp_sender(self, sock: socket.socket, client: tuple[str, int]) -> Send:
        async def send(wire: bytes) -> None:
            if not wire:
                return  # DROP
            for _ in range(2):
                try:
                    sock.sendto(wire, client)
                    return
                except BlockingIOError:
                    await trio.lowlevel.wait_writable(sock)
                except OSError:
                    break
            self.dropped_sends += 1

        return send

    def spawn(self, queries: trio.Nursery, request: Request | bytes, send: Send) -> None:
        """Answer ``request`` in a task; ``send`` is called exactly once with the reply
        (unless the task is cancelled first).

        The task runs in the deadline bucket open in ``queries`` (see
        ``_DeadlineBucket``): a wait still going at the query's deadline is
        cancelled, and the client gets SERVFAIL.
        """
        assert isinstance(request, Request)
        if self.in_flight >= self.options.max_in_flight:
            queries.start_soon(send, self.dispatcher.refuse(request))
            return
        self.in_flight += 1
        bucket = self._buckets.get(queries)
        if bucket is None or trio.current_time() >= bucket.closes:
            bucket = self._open_bucket(queries)
        bucket.start(self._answer_later, self.dispatcher, request, send, bucket)

    def _open_bucket(self, queries: trio.Nursery) -> _DeadlineBucket:
        deadline = self.options.query_deadline
        width = min(BUCKET_WIDTH, deadline / 10)
        closes = trio.current_time() + width
        bucket = self._buckets[queries] = _DeadlineBucket(closes, closes + deadline)
        queries.start_soon(self._run_bucket, queries, bucket)
        return bucket

    async def _run_bucket(self, queries: trio.Nursery, bucket: _DeadlineBucket) -> None:
        try:
            await bucket.run()
        finally:
            if self._buckets.get(queries) is bucket:
                del self._buckets[queries]

    async def _answer_later(
        self, dispatcher: Dispatcher, request: Request, send: Send, bucket: _DeadlineBucket
    ) -> None:
        try:
            wire = await dispatcher.answer(request)
        except trio.Cancelled:
            # The deadline (or the server stopping) cancelled the plugins' wait: their
            # on_cancel hooks were told (log writes its SERVFAIL line); the client gets
            # SERVFAIL now, sent outside the cancelled scope and bounded in time.
            if trio.current_time() >= bucket.cancel_at:
                log.warning(
                    "query %s %s timed out after %gs",
                    request.name,
                    request.type_name,
                    self.options.query_deadline,
                )
            wire = dispatcher.finish(request, request.error(dns.rcode.SERVFAIL))
            with trio.CancelScope(shield=True, deadline=trio.current_time() + SEND_GRACE):
                await send(wire)
            raise
        else:
            await send(wire)
        finally:
            self.in_flight -= 1

    # -- TCP --------------------------------------------------------------------

    async def _tcp_accept(self, sock: socket.socket, queries: trio.Nursery) -> None:
        transport, host, port = self.key
        what = f"{transport}://{host}:{port}"
        await accept_connections(sock, self.budget.dns, self._tcp_connection, queries, what)

    async def _tcp_connection(self, stream: trio.SocketStream) -> None:
        client = stream.socket.getpeername()[:2]
        local = stream.socket.getsockname()[:2]
        connection = TcpConnection(self, stream, client, local)
        self.connections.add(connection)
        try:
            await connection.run()
        finally:
            self.connections.discard(connection)

    def handle_tcp(
        self, data: bytes, client: tuple[str, int], local: tuple[str, int]
    ) -> bytes | Request | None:
        return self.dispatcher.handle(data, client, "tcp", local)


def bind_http_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return _bind(family, socket.SOCK_STREAM, host or "0.0.0.0", port, 0)


class Server:
    """Runs configurations: binds what they need, swaps them on reload, stops cleanly."""

    def __init__(self, options: ServerOptions | None = None) -> None:
        self.options = options = options or ServerOptions()
        self.budget = ConnectionBudget.of(options.max_connections, options.max_http_connections)
        """Every TCP connection of every listener, DNS and HTTP, counts against this."""
        self.listeners: dict[ListenerKey, DnsListener] = {}
        self.http: dict[tuple[str, int], HttpListener] = {}
        self.config: Config | None = None
        self._nursery: trio.Nursery | None = None
        self._config_scopes: dict[int, trio.CancelScope] = {}
        self._stop = trio.Event()
        self._reload_lock = trio.Lock()

    @property
    def addresses(self) -> list[tuple[str, str, int]]:
        """``(proto, host, port)`` of every bound DNS socket."""
        return [a for lst in self.listeners.values() for a in lst.addresses]

    def port(self, key: ListenerKey | None = None) -> int:
        """The bound port of a listener (the only one when ``key`` is None)."""
        lst = self.listeners[key] if key else next(iter(self.listeners.values()))
        return lst.addresses[0][2]

    def http_address(self, host: str, port: int) -> tuple[str, int]:
        """The bound address of the HTTP listener configured as ``host:port``."""
        return self.http[(host, port)].address

    async def serve(
        self, config: Config, *, task_status: trio.TaskStatus[Server] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Bind, start ``config``, report started, and serve until ``stop``."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await self._activate(config)
            task_status.started(self)
            await self._stop.wait()
            await self._shutdown()
            nursery.cancel_scope.cancel()

    def stop(self) -> None:
        """Stop accepting, finish queries in flight, run shutdown hooks, return."""
        self._stop.set()

    async def reload(self, config: Config) -> None:
        """Swap in a built configuration; the old one serves until the swap."""
        async with self._reload_lock:
            await self._activate(config)

    async def _activate(self, config: Config) -> None:
        assert self._nursery is not None
        new_dns: dict[ListenerKey, DnsListener] = {}
        new_http: dict[tuple[str, int], HttpListener] = {}
        try:
            zero_port = 0  # keys asking for "any port" share the first one picked
            for key in config.routes:
                _transport, host, port = key
                if key not in self.listeners:
                    socks = self._bind_dns(host, port, zero_port)
                    if port == 0 and not zero_port:
                        zero_port = socks[0].getsockname()[1]
                    new_dns[key] = DnsListener(key, socks, self.options, self.budget)
            for address in self._http_addresses(config):
                if address not in self.http:
                    new_http[address] = self._bind_http(address)
            # Where each listener is bound, for plugins that query their own server (loop).
            config.shared[BOUND_PORTS] = {
                key: (new_dns.get(key) or self.listeners[key]).addresses[0][2]
                for key in config.routes
            }
            # Plugins start before any query reaches them.
            await self._nursery.start(self._run_config, config)
        except BaseException:
            for lst in new_dns.values():
                for s in lst.socks:
                    s.close()
            for h in new_http.values():
                h.sock.close()
            raise
        old = self.config
        self.config = config
        for key, lst in new_dns.items():
            self.listeners[key] = lst
            lst.use(config)
            await self._nursery.start(lst.run)
        for key in [k for k in self.listeners if k not in config.routes]:
            # No block listens here any more: stop answering now; queries in flight
            # finish, then the sockets close (the listener's task ends).
            self.listeners.pop(key).stop_accepting()
        for lst in self.listeners.values():
            lst.use(config)
        for addr, h in new_http.items():
            self.http[addr] = h
            self._nursery.start_soon(h.serve)
        wanted = self._http_addresses(config)
        for addr, h in self.http.items():
            h.routes = wanted.get(addr, {})
        for addr in [a for a in self.http if a not in wanted]:
            self.http.pop(addr).close()
        if old is not None:
            self._nursery.start_soon(self._retire, old)

    def _bind_dns(self, host: str, port: int, zero_port: int) -> list[socket.socket]:
        """Bind a listener; port 0 reuses ``zero_port`` when it is free on this host too."""
        options = self.options
        if port == 0 and zero_port:
            try:
                return bind_dns_sockets(host, zero_port, options.recv_buffer, options.reuse_port)
            except OSError:
                pass  # taken on this address: any free port will do
        return bind_dns_sockets(host, port, options.recv_buffer, options.reuse_port)

    def _http_addresses(self, config: Config) -> dict[tuple[str, int], dict[str, HttpHandler]]:
        """HTTP routes by listening address; in worker mode all on the private socket."""
        if self.options.http_socket is None:
            return {addr: dict(routes) for addr, routes in config.http_routes.items()}
        merged: dict[str, HttpHandler] = {}
        for routes in config.http_routes.values():
            merged.update(routes)
        # Always bound, even with no routes: its presence tells the parent we started.
        return {(self.options.http_socket, 0): merged}

    def _bind_http(self, address: tuple[str, int]) -> HttpListener:
        if self.options.http_socket is not None and address[0] == self.options.http_socket:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address[0])
            raw = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            raw.bind(address[0])
            raw.listen(64)
            return HttpListener(raw, address, self.budget.http, self.options.http)
        sock = bind_http_socket(*address)
        return HttpListener(sock, sock.getsockname()[:2], self.budget.http, self.options.http)

    async def _run_config(
        self, config: Config, *, task_status: trio.TaskStatus[trio.CancelScope]
    ) -> None:
        """Own a configuration's plugin tasks: startup, background tasks, shutdown."""
        with trio.CancelScope() as scope:
            self._config_scopes[id(config)] = scope
            try:
                async with trio.open_nursery() as nursery:
                    for plugin in config.plugins:
                        try:
                            await plugin.startup()
                        except Exception as exc:
                            raise StartupError(f"plugin/{plugin.name}: {exc}") from exc
                    for plugin in config.plugins:
                        if plugin.has_background_task():
                            nursery.start_soon(plugin.run, name=f"plugin/{plugin.name}")
                    task_status.started(scope)
                    await trio.sleep_forever()
            finally:
                self._config_scopes.pop(id(config), None)

    async def _retire(self, config: Config, grace: float = 5.0) -> None:
        """Stop an old configuration once queries it took have had time to finish."""
        await trio.sleep(grace)
        await self._stop_config(config)

    async def _stop_config(self, config: Config) -> None:
        with trio.CancelScope(shield=True):
            for plugin in config.plugins:
                try:
                    await plugin.shutdown()
                except Exception:
                    log.exception("plugin/%s: shutdown failed", plugin.name)
        scope = self._config_scopes.get(id(config))
        if scope is not None:
            scope.cancel()

    async def _shutdown(self) -> None:
        config = self.config
        if config is not None:
            # Still serving here: the health plugin's lameduck waits in this hook.
            for plugin in config.plugins:
                try:
                    await plugin.before_stop()
                except Exception:
                    log.exception("plugin/%s: before_stop failed", plugin.name)
        for lst in self.listeners.values():
            lst.stop_accepting()
        with trio.move_on_after(self.options.query_deadline):
            for lst in self.listeners.values():
                await lst.done.wait()
        if config is not None:
            await self._stop_config(config)
        for h in self.http.values():
            h.close()
