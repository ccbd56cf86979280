"""What a plugin author needs: the Plugin base class, its setup context, and helpers.

A plugin is a class registered under the entry-point group
``pycorefile.plugins``; the entry-point name is its Corefile directive. The
server calls ``setup`` with the block's directives of that name (a pure
function of the parsed Corefile, testable without sockets), links the returned
instance into the chain, and then calls ``handle`` for each query.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

import dns.message
import dns.name
import dns.rcode

from ._contract import STACKTRACE, tag
from ._request import FailureObserver, Handler, ReplyObserver, Request
from ._types import Client, HttpHandler, OnReply, Pending, Reply, Result, Route
from ._zones import ZoneError, in_zone, normalize_zones
from .changes import DataChange, DataChanges
from .corefile._model import CorefileError, Directive, ServerBlock, ZoneKey

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

__all__ = [
    "MAX_LOOKUP_DEPTH",
    "Client",
    "ClientSearchPath",
    "DataChange",
    "DataChanges",
    "End",
    "FailureObserver",
    "Fallthrough",
    "Plugin",
    "PluginError",
    "Reloader",
    "ReplyObserver",
    "Route",
    "SetupContext",
    "SetupError",
    "StartupError",
    "TcpTimeouts",
    "Wrapper",
    "check_args",
    "go_duration",
    "lookup",
    "parse_duration",
    "parse_http_address",
    "parse_zones",
    "reply_message",
    "with_stacktrace",
]


class SetupError(Exception):
    """A plugin's objection to its Corefile arguments, shown at their position.

    ``arg`` is the index of the offending argument of ``directive`` (None for
    the directive as a whole).
    """

    def __init__(self, message: str, directive: Directive | None = None, arg: int | None = None):
        super().__init__(message)
        self.message = message
        self.directive = directive
        self.arg = arg

    def to_corefile_error(self, plugin: str, block: ServerBlock) -> CorefileError:
        """The error as the user sees it: ``FILE:LINE:COL - plugin/NAME: message``."""
        d = self.directive
        source = None
        if d is None:
            file, line, column = block.file, block.line, block.column
        else:
            index = self.arg if self.arg is not None else -1
            file, line, column = d.arg_position(index)
            if 0 <= index < len(d.arg_tokens):
                source = d.arg_tokens[index].source_line
        return CorefileError(f"plugin/{plugin}: {self.message}", file, line, column, source)


class PluginError(Exception):
    """A plugin could not answer: CoreDNS's ``return rcode, err``.

    Raise it from ``serve`` when the query fails in an expected way (every
    upstream timed out, an API is unreachable). The client gets ``rcode``
    (SERVFAIL by default); the ``errors`` plugin logs the message; nothing
    between the raiser and the server stores it (a cache never keeps it), and
    it is not counted as a panic. Any other exception is a bug in the plugin:
    it is logged by the server, counted as a panic and answered SERVFAIL.
    """

    def __init__(self, message: str, rcode: int = 2) -> None:
        super().__init__(message)
        self.message = message
        self.rcode = rcode


class StartupError(Exception):
    """A plugin cannot start, or must stop its server (the loop plugin found a loop).

    Raised from ``startup`` the configuration is not served; raised from
    ``run`` the server stops. Either way the message is shown and a server
    started from the command line exits with status 1.
    """


def with_stacktrace(exc: BaseException) -> None:
    """Ask the server to log this panic (an exception that is not a ``PluginError``)
    with its traceback: what ``errors { stacktrace }`` does, as CoreDNS's."""
    setattr(exc, STACKTRACE, True)


class End:
    """What the last plugin's ``next`` is: SERVFAIL, as CoreDNS's ``plugin.NextOrFailure``.

    A server block with no chain at all answers ``rcode`` REFUSED instead, as
    CoreDNS answers a zone whose block has no plugin chain (``build_chain``).
    ``Plugin.is_last`` tells a plugin whether its ``next`` is this.
    """

    __slots__ = ("after", "rcode")

    def __init__(self, after: str, rcode: int = dns.rcode.SERVFAIL) -> None:
        self.after = after
        self.rcode = rcode

    def handle(self, request: Request) -> Reply:
        return request.error(self.rcode)


class Reloader(Protocol):
    """How a plugin asks the running server to reload its Corefile (the *reload* plugin).

    ``SetupContext.reloader`` gives it when the server can reload (the
    command line's runner); None otherwise (tests, embedders).
    """

    def files(self) -> list[str]:
        """The Corefile and every file it imports, as served (the Corefile alone before)."""
        ...

    def read_corefile(self) -> list[ServerBlock]:
        """The Corefile as it is on disk now, parsed (imports expanded).

        Blocks on files and a child process: call it from a worker thread.
        Raises ``CorefileError`` or ``OSError`` when it cannot be read or parsed.
        """
        ...

    async def reload(self, reason: str) -> bool:
        """Build the Corefile anew and serve it; False (logged with ``reason``, counted as a
        failed reload) when it is broken: the running configuration keeps serving."""
        ...

    def serves(self, plugin: Plugin) -> bool:
        """True while ``plugin`` belongs to the configuration being served."""
        ...


BOUND_PORTS = "bound_ports"
"""``SetupContext.shared`` key: each listener's bound port, set before plugins start."""


@dataclass(frozen=True)
class TcpTimeouts:
    """A server block's DNS-over-TCP settings (the timeouts plugin); None keeps the default."""

    read: float | None = None
    write: float | None = None
    idle: float | None = None
    max_queries: int | None = None


RELOADER_KEY = "runner"
"""Where a server that can reload puts its ``Reloader`` in the shared state."""
DATA_CHANGES = "data_changes"
"""Where ``SetupContext.shared`` holds the configuration's ``DataChanges``."""


@dataclass
class SetupContext:
    """What a plugin's setup can see of its server block and the server."""

    block: ServerBlock
    keys: tuple[ZoneKey, ...]
    corefile: str = "Corefile"
    dns_port: int = 53
    listen_hosts: list[str] = field(default_factory=list)
    """Addresses the block listens on; empty means every interface (the bind plugin sets it)."""
    tcp_timeouts: TcpTimeouts | None = None
    """The block's TCP timeouts, when the timeouts plugin sets them."""
    udp_payload: int | None = None
    """The block's EDNS payload limit, when the bufsize plugin sets it: the chain sees
    a client's larger payload lowered to it, and UDP replies are capped to it (instead
    of the server's 1232 bytes)."""
    shared: dict[str, Any] = field(default_factory=dict)
    """State shared by every block of one configuration (e.g. one metrics registry)."""
    http_routes: list[tuple[str, str, HttpHandler]] = field(default_factory=list)
    plugins: dict[str, Plugin] = field(default_factory=dict)
    """The block's plugins by name, in chain order, complete once every directive is set up."""
    query_filters: list[Callable[[Request], bool]] = field(default_factory=list)
    """Conditions a query must meet to be served by this block (``filter_queries``)."""
    view: str = ""
    """The block's view name: the ``view`` label of its metrics (the view plugin sets it)."""
    blocks: list[ServerBlock] = field(default_factory=list)
    """Every server block of the Corefile this configuration is built from (imports expanded)."""

    @property
    def reloader(self) -> Reloader | None:
        """The running server's reload hook, when it can reload (see ``Reloader``)."""
        found = self.shared.get(RELOADER_KEY)
        return found if found is not None and hasattr(found, "read_corefile") else None

    @property
    def zones(self) -> tuple[str, ...]:
        """The block's zones, normalised (``example.org.``), in key order."""
        seen: dict[str, None] = {}
        for key in self.keys:
            seen.setdefault(key.zone, None)
        return tuple(seen)

    def own_address(self) -> tuple[str, int]:
        """Where a query to this block goes: its first key's first listen address
        and port, the port as bound (use at startup or later: a key's port 0 is
        known once bound). An address bound to every interface (or none given)
        is reached on the loopback address."""
        key = self.keys[0]
        host = self.listen_hosts[0] if self.listen_hosts else ""
        ports = self.shared.get(BOUND_PORTS) or {}
        port = ports.get((key.transport, host, key.port), key.port)
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        return host, port

    def plugin(self, name: str) -> Plugin | None:
        """Another plugin of this block, by directive name (use at startup or later)."""
        return self.plugins.get(name)

    def plugins_after(self, plugin: Plugin) -> tuple[Plugin, ...]:
        """The plugins of this block's chain after ``plugin``, in order (use at startup or later).

        Only plugins that serve queries (those linked into the chain); empty
        when ``plugin`` is the last one or not of this block.
        """
        chain = [other for other in self.plugins.values() if other.serves_queries]
        for index, other in enumerate(chain):
            if other is plugin:
                return tuple(chain[index + 1 :])
        return ()

    @property
    def data_changes(self) -> DataChanges:
        """The configuration's announcements of changed local data (``pycorefile.changes``).

        A plugin that answers from data it loads announces each change
        through it; a plugin that remembers answers checks them against it.
        One per configuration, shared by every block.
        """
        found = self.shared.get(DATA_CHANGES)
        if not isinstance(found, DataChanges):
            found = self.shared[DATA_CHANGES] = DataChanges()
        return found

    def filter_queries(self, admits: Callable[[Request], bool], view: str = "") -> None:
        """Serve only the queries ``admits`` is true for (CoreDNS's server block filters).

        Blocks with filters may share a zone and port: for a query, the blocks
        of the most specific zone are tried in Corefile order and the first
        whose filters all admit it serves it (a block without filters admits
        every query); when none does, the blocks of less specific zones are
        tried, and a query no block takes is REFUSED. ``admits`` runs for every
        query routed to the zone, before any plugin, and must not wait; an
        exception counts as false. ``view`` names the block in metrics.
        """
        self.query_filters.append(admits)
        if view:
            self.view = view

    def http_route(self, address: str, path: str, handler: HttpHandler) -> None:
        """Serve ``path`` on the HTTP listener at ``address`` (``:8080``, ``localhost:9153``)."""
        self.http_routes.append((address, path, handler))


class Plugin:
    """Base class of every plugin.

    Subclasses override ``setup`` and ``handle`` (the one serving contract):
    answer now with a reply, pass the query on with
    ``return self.next.handle(request)``, or return ``Pending(coroutine)`` when
    the answer needs a wait; the server awaits it once, and ``then`` /
    ``pass_on`` state what to do with the reply once, whether it came now or
    after the wait. A plugin that only looks before and after the rest of the
    chain subclasses ``Wrapper`` instead. See docs/plugins.md.
    """

    name: ClassVar[str] = ""
    """The directive name; the registry sets it from the entry point."""
    before: ClassVar[str | None] = None
    """For third-party plugins: the built-in this plugin runs just before."""
    after: ClassVar[str | None] = None
    """For third-party plugins: the built-in this plugin runs just after."""
    repeatable: ClassVar[bool] = False
    """True when the directive may appear several times in one block."""
    serves_queries: ClassVar[bool] = True
    """False for setup-only directives (bind, health, ...): not linked into the chain."""
    any_class: ClassVar[bool] = False
    """True when the plugin answers classes other than IN (CHAOS, ...)."""
    decides_by_question: ClassVar[bool] = False
    """True when the question alone (name, type, class) decides whether the plugin answers,
    and every query it does not answer is passed on untouched (local, any, chaos).

    A known-answer plugin after it (cache) may then answer first, on the
    server's fast path: a question this plugin answers never reached the
    plugins after it, so none of them holds an answer for it.
    """
    coredns_handler: ClassVar[bool] = False
    """For a plugin that does not serve queries here (``serves_queries`` False) but is
    a handler in CoreDNS's chain (prometheus, bufsize): a block with it has a chain,
    so a query no plugin answers gets SERVFAIL, not REFUSED, as in CoreDNS."""

    next: Handler

    @property
    def is_last(self) -> bool:
        """True when no plugin comes after this one in its chain (``next`` is ``End``)."""
        return isinstance(self.next, End)

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> Plugin:
        """Build the plugin from every directive of its name in one block."""
        raise NotImplementedError(f"plugin {cls.name} has no setup")

    def handle(self, request: Request) -> Result:
        """Answer (a Reply), pass on (``return self.next.handle(request)``), or wait
        (``return Pending(coroutine)``). The default passes every query on."""
        return self.next.handle(request)

    def serve_known(
        self, wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
    ) -> bytes | None:
        """The server's fast path: answer a plain query from memory, or None.

        Called, instead of the chain, for the block's first plugin that has it
        when only wrappers transparent on success (errors) come before it, with
        the query's bytes and what the server read from them:
        ``key`` (``Request.key``), ``name_end``, ``edns``, ``do``, and
        ``server`` (the block's metric label). A plugin that answers repeated
        questions from memory (cache, meshhosts) overrides it so that a hit
        costs no ``Request``. When it returns bytes they must be exactly what
        ``handle`` would have returned, with the same effects; when it
        returns None it must have had no effect (the chain then runs as
        usual).
        """
        return None

    async def startup(self) -> None:
        """Called once the whole configuration is built, before queries arrive."""

    async def shutdown(self) -> None:
        """Called when this configuration stops serving (exit or reload), queries done."""

    async def before_stop(self) -> None:
        """Called at exit while the server still answers (the health plugin's lameduck)."""

    async def run(self) -> None:
        """A background task (watchers, health checks), cancelled at shutdown."""

    def ready(self) -> bool:
        """False until the plugin can answer (for the ready plugin)."""
        return True

    def metrics(self) -> Iterable[Metric]:
        """Prometheus metric families of this plugin, built when scraped.

        Count in plain integers on the hot path and turn them into samples
        here (``prometheus_client.core.CounterMetricFamily`` and friends), with
        CoreDNS's names and labels.
        """
        return ()

    @classmethod
    def has_background_task(cls) -> bool:
        return cls.run is not Plugin.run


# -- Hooks between plugins -----------------------------------------------------------


@runtime_checkable
class ClientSearchPath(Protocol):
    """A plugin that knows each client's DNS search path (``autopath @PLUGIN``).

    *kubernetes* finds the client's pod by its source IP (``pods verified``)
    and gives ``NS.svc.ZONE``, ``svc.ZONE``, ``ZONE`` and its own resolv.conf
    search domains. A third-party plugin offers the same by having this
    method. (A plugin whose search path is the same for every client, as
    *meshhosts* in a sidecar, has ``search_path()`` instead.)
    """

    def search_path_for(self, request: Request) -> Sequence[str] | None:
        """The search domains of the client that sent ``request``, first to last
        (FQDNs), or None when it is unknown: autopath then leaves the query alone.
        Called for every query autopath may search for: it must be a quick lookup."""
        ...


# -- Wrappers --------------------------------------------------------------------------


class Wrapper(Plugin):
    """Base class of a plugin that only looks before and after the rest of the chain.

    Override any of the four hooks; ``handle`` is derived from those you
    override, once, when the class is created:

    - ``on_query(request)``: a reply to answer now (credited to this plugin),
      or None to pass the query on (acl).
    - ``on_reply(request, reply)``: what goes back instead of ``reply`` (log).
      A ``Message`` that comes back belongs to the plugin that receives it: it
      may change it and return it (see "Who owns a returned Message" in
      docs/plugins.md).
    - ``on_error(request, exc)``: a reply for an exception from the rest of
      the chain, or re-raise it (errors answers; log logs and re-raises).
    - ``on_cancel(request)``: the query was cancelled while waiting (its
      deadline passed); log writes its SERVFAIL line here. Cannot answer.

    A wrapper whose ``on_query`` and ``on_reply`` are not overridden is
    *transparent on success*: the server's known-answer path may skip it. A
    subclass that states its own ``handle`` keeps it (and so do its
    subclasses); it is never transparent.
    """

    def on_query(self, request: Request) -> Reply | None:
        return None

    def on_reply(self, request: Request, reply: Reply) -> Reply:
        return reply

    def on_error(self, request: Request, exc: Exception) -> Reply:
        raise exc

    def on_cancel(self, request: Request) -> None:
        return None

    def on_known_reply(self, reply: bytes) -> bytes:
        """What ``on_reply`` does, done to the bytes of a known answer (no Request).

        Optional. A wrapper with ``on_reply`` but no ``on_query`` that states it
        keeps the server's known-answer path open behind it: an answer the
        known-answer plugin gives (a cache hit) goes through this instead of
        through ``on_reply`` (loadbalance shuffles it). It must give the same
        reply ``on_reply`` would give for those bytes.
        """
        return reply

    @classmethod
    def transparent_on_success(cls) -> bool:
        """True when the class's handle is the derived one that looks at failures only."""
        return cls.handle is _handle_failed_only

    @classmethod
    def reshapes_known(cls) -> bool:
        """True when the class changes replies but says how for a known answer
        (``on_known_reply``), and looks at no query (``on_query``)."""
        return (
            cls.handle is _handle_general
            and cls.on_query is Wrapper.on_query
            and cls.on_known_reply is not Wrapper.on_known_reply
        )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.handle not in _DERIVED:
            return  # the class (or a parent below Wrapper) states its own handle
        hooks = {hook for hook in _HOOKS if getattr(cls, hook) is not getattr(Wrapper, hook)}
        if not hooks & {"on_query", "on_reply"}:
            cls.handle = _handle_failed_only  # type: ignore[method-assign,assignment]
        elif hooks == {"on_query"}:
            cls.handle = _handle_before_only  # type: ignore[method-assign,assignment]
        else:
            cls.handle = _handle_general  # type: ignore[method-assign,assignment]

    def _on_error_here(self, request: Request, exc: Exception) -> Result:
        """``on_error``; an exception it raises that is not ``exc`` is named after this plugin."""
        try:
            return self.on_error(request, exc)
        except Exception as raised:
            tag(raised, self.name)
            raise

    def _later(self, request: Request, pending: Pending, success: bool) -> Pending:
        """The after-part of a wrapper whose rest of the chain had to wait: one continuation."""
        replied: OnReply | None = None
        if success:

            def replied(reply: Reply) -> Result:
                try:
                    return self.on_reply(request, reply)
                except Exception as exc:
                    tag(exc, self.name)
                    raise

        cls = type(self)
        failed = None if cls.on_error is Wrapper.on_error else self._on_error_here
        pending.steps.append((
            replied,
            None if failed is None else lambda exc: failed(request, exc),
            None if cls.on_cancel is Wrapper.on_cancel else lambda: self.on_cancel(request),
        ))  # fmt: skip
        return pending


_HOOKS = ("on_query", "on_reply", "on_error", "on_cancel")


def _handle_failed_only(self: Wrapper, request: Request) -> Result:
    try:
        result = self.next.handle(request)
    except Exception as exc:
        return self._on_error_here(request, exc)
    if type(result) is Pending:
        return self._later(request, result, False)
    return result


def _handle_before_only(self: Wrapper, request: Request) -> Result:
    try:
        reply = self.on_query(request)
    except Exception as exc:
        tag(exc, self.name)
        raise
    if reply is not None:
        request.answered_by = self.name
        return reply
    return self.next.handle(request)


def _handle_general(self: Wrapper, request: Request) -> Result:
    try:
        reply = self.on_query(request)
        if reply is not None:
            request.answered_by = self.name
            return reply
        try:
            result = self.next.handle(request)
        except Exception as exc:
            return self.on_error(request, exc)
        if isinstance(result, Pending):
            return self._later(request, result, True)
        return self.on_reply(request, result)
    except Exception as exc:
        tag(exc, self.name)
        raise


_DERIVED = (_handle_failed_only, _handle_before_only, _handle_general)
Wrapper.handle = _handle_failed_only  # type: ignore[method-assign,assignment]
"""A bare Wrapper passes everything on (its subclasses derive their own)."""


# -- Asking the server a new question -------------------------------------------------

MAX_LOOKUP_DEPTH = 8
"""How many lookups may nest (a lookup asked while answering a lookup, ...): beyond it the
lookup answers SERVFAIL, so a loop of lookups (a template whose CNAME points at a name the
same template answers with a CNAME back) ends. CoreDNS's file plugin stops at 8 too."""

log = logging.getLogger("pycorefile")


def lookup(request: Request, name: str | dns.name.Name | bytes, qtype: int | None = None) -> Result:
    """Ask the server ``name`` (and ``qtype``, default the request's) while answering ``request``.

    CoreDNS's ``upstream.Lookup``: the new question goes through the server from
    the top, routed to the server block of the longest zone as a client's query
    would be, and that block's whole chain answers it (cache, forward, ...). It
    keeps the request's client, ID, flags and EDNS record. The result is a reply
    now or a ``Pending`` (use ``then``); it is never an exception: a failure of
    the chain is its error reply (SERVFAIL, or a ``PluginError``'s rcode).

    Loops end: a request carries how many lookups deep it is, and beyond
    ``MAX_LOOKUP_DEPTH`` the lookup is answered SERVFAIL (and logged). The reply
    is not sized for a client (up to 65535 bytes) and not counted in the
    server's metrics: the client's query is. ``name`` is text, a dnspython name
    or an uncompressed wire name; ``ValueError`` for one that is not a valid
    question name.

    A request that no server routed (a plugin test driving ``handle``) has no
    server to ask: ``pycorefile.testing.run`` gives it one that runs the tested
    chain from the top; otherwise the lookup is answered SERVFAIL.
    """
    inner = request.derive(name, qtype)
    inner.depth = request.depth + 1
    resolver = request.resolver
    if inner.depth > MAX_LOOKUP_DEPTH:
        log.warning(
            "lookup of %s %s: more than %d nested lookups (a loop?); answered SERVFAIL",
            inner.name,
            inner.type_name,
            MAX_LOOKUP_DEPTH,
        )
        return inner.error(dns.rcode.SERVFAIL)
    if resolver is None:
        return inner.error(dns.rcode.SERVFAIL)
    return resolver.resolve(inner)


def reply_message(reply: Reply) -> dns.message.Message:
    """A reply as a dnspython ``Message``: parsed when it is wire bytes (a new one, yours to
    change), else the ``Message`` itself (yours too: see "Who owns a returned Message")."""
    if isinstance(reply, bytes | bytearray):
        return dns.message.from_wire(bytes(reply), ignore_trailing=True)
    return reply


# -- Parsing helpers shared by plugins ------------------------------------------------

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str, directive: Directive | None = None, arg: int | None = None) -> float:
    """A Go duration (``5s``, ``1m30s``, ``250ms``; a bare ``0`` too) in seconds."""
    if text == "0":
        return 0.0
    pos = 0
    total = 0.0
    for match in _DURATION.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise SetupError(f"invalid duration {text!r} (expected e.g. 5s, 1m, 250ms)", directive, arg)
    return total


def check_args(directive: Directive, minimum: int = 0, maximum: int | None = None) -> None:
    """Raise CoreDNS's argument-count error when the count is out of range."""
    n = len(directive.args)
    if n < minimum or (maximum is not None and n > maximum):
        raise SetupError(
            f"Wrong argument count or unexpected line ending after '{directive.name}'",
            directive,
            min(n, maximum) if maximum is not None and n > maximum else None,
        )


def parse_address(address: str, default_port: int) -> tuple[str, int]:
    """An HTTP listener's address, ``host:port``, ``:port``, ``[::1]:port`` or ``host``,
    as ``(host, port)`` (``localhost`` is 127.0.0.1); ``ValueError`` for a bad port.

    The configuration groups plugins' HTTP routes by it (``SetupContext.http_route``);
    health and ready check their address with it. Not part of the public API.
    """
    host, sep, port = address.rpartition(":")
    if not sep or "]" in port:
        host, port = address, str(default_port)
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    if not port.isdigit() or int(port) > 65535:
        raise ValueError(f"invalid port in address {address!r}")
    return host, int(port)


def parse_zones(
    args: Sequence[str], ctx: SetupContext, directive: Directive | None = None, first: int = 0
) -> list[str]:
    """Zones given as arguments, or the server block's zones when there are none."""
    if not args:
        return list(ctx.zones)
    try:
        return normalize_zones(list(args))
    except ZoneError as exc:
        raise SetupError(str(exc), directive, first) from exc


@dataclass(frozen=True)
class Fallthrough:
    """``fallthrough [ZONES...]``: which names a plugin passes on when it has no answer."""

    zones: tuple[str, ...] = ()

    @classmethod
    def parse(cls, directive: Directive) -> Fallthrough:
        if not directive.args:
            return cls((".",))
        try:
            return cls(tuple(normalize_zones(list(directive.args))))
        except ZoneError as exc:
            raise SetupError(str(exc), directive, 0) from exc

    def through(self, name: str) -> bool:
        """True when ``name`` (lowercased FQDN) should go to the next plugin."""
        return any(in_zone(name, zone) for zone in self.zones)


def parse_http_address(directive: Directive, index: int) -> str:
    """Check ``HOST:PORT`` (``:8080``, ``localhost:9153``, ``[::1]:8181``); return it as given.

    As CoreDNS, the port is required: ``localhost`` alone is an error.
    """
    text = directive.args[index]
    host, sep, port = text.rpartition(":")
    if not sep or "]" in port or (host.startswith("[") != host.endswith("]")):
        raise SetupError(f"address {text}: missing port in address", directive, index)
    if ":" in host and not host.startswith("["):
        raise SetupError(f"address {text}: too many colons in address", directive, index)
    try:
        parse_address(text, 0)
    except ValueError as exc:
        raise SetupError(str(exc), directive, index) from None
    return text


def go_duration(seconds: float) -> str:
    """A duration as Go's ``time.Duration.String`` prints it (``30s``, ``5m0s``, ``500ms``)."""
    ns = round(seconds * 1e9)
    if ns == 0:
        return "0s"
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size:
                return _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3_600_000_000_000)
    minutes, rest = divmod(rest, 60_000_000_000)
    secs = _decimal(rest, 1_000_000_000) + "s"
    if hours:
        return f"{hours}h{minutes}m{secs}"
    if minutes:
        return f"{minutes}m{secs}"
    return secs


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    digits = len(str(unit)) - 1
    return f"{whole}.{frac:0{digits}d}".rstrip("0")
