"""From a parsed Corefile to a runnable configuration: plugins set up and chained.

Nothing here opens a socket, so ``-validate`` and reload build a configuration
completely, and only a configuration that built without error is served.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dns.rcode

from ._chain import compile_chain, known_path
from ._registry import Registry, unknown_directive
from ._request import FailureObserver, Handler, ReplyObserver, Request
from ._types import HttpHandler, KnownAnswer, ListenerKey
from ._zones import zone_wire
from .corefile import CorefileError, Directive, ServerBlock, ZoneKey, normalize_keys
from .plugin import End, Plugin, SetupContext, SetupError, TcpTimeouts, parse_address

SERVED_TRANSPORTS = ("dns",)

log = logging.getLogger("pycorefile")


@dataclass
class BlockConfig:
    """One server block, set up: its keys, where it listens, its chain."""

    block: ServerBlock
    keys: tuple[ZoneKey, ...]
    hosts: list[str]
    plugins: list[Plugin]
    chain: Handler
    any_class: bool
    known: KnownAnswer | None = None
    """What the server calls for a known answer (the fast path): the first plugin
    with ``serve_known``, when only wrappers transparent on success (errors) or
    that say what they do to a known answer (loadbalance) come before it
    (``_chain.known_path``)."""
    known_by: str = ""
    """That plugin's name (the ``plugin`` label of what it answers)."""
    tcp_timeouts: TcpTimeouts | None = None
    """What the timeouts plugin sets for the block's listeners."""
    udp_cap: int | None = None
    """What the bufsize plugin sets: the EDNS payload the chain sees at most and the
    cap on UDP replies (None: the server's, 1232 bytes)."""
    filters: tuple[Callable[[Request], bool], ...] = ()
    """Conditions a query must meet to be served here (``SetupContext.filter_queries``)."""
    view: str = ""
    """The block's view name (the ``view`` metric label)."""

    def admits(self, request: Request) -> bool:
        """True when every filter of the block lets ``request`` in (an error is a no)."""
        for admits in self.filters:
            try:
                if not admits(request):
                    return False
            except Exception:
                return False
        return True

    @property
    def server_label(self) -> str:
        """CoreDNS's ``server`` metric label, e.g. ``dns://:53``."""
        key = self.keys[0]
        host = self.hosts[0] if self.hosts else ""
        return f"{key.transport}://{host}:{key.port}"


@dataclass(eq=False)
class BlockRoute:
    """Where queries for ``zone`` on one listener go (hashed by identity): a ``Route``
    that knows its block's configuration.

    Blocks with query filters may share a zone on a listener: the route of the
    first (in Corefile order) links to the next by ``alternative``, and
    ``selective`` tells the dispatcher to choose among them per query.
    """

    zone: str
    config: BlockConfig
    server: str
    alternative: BlockRoute | None = None
    selective: bool = False
    known: KnownAnswer | None = None
    """The block's fast path, when the route needs no choice between blocks."""

    def __post_init__(self) -> None:
        self.selective = bool(self.config.filters)
        self.known = None if self.selective else self.config.known

    @property
    def view(self) -> str:
        return self.config.view

    def add_alternative(self, route: BlockRoute) -> None:
        """Try ``route`` after this one (and those already added) for the same zone."""
        last = self
        while last.alternative is not None:
            last = last.alternative
        last.alternative = route
        self.selective, self.known = True, None


@dataclass
class Config:
    """A whole configuration, ready to serve."""

    blocks: list[BlockConfig]
    routes: dict[ListenerKey, dict[bytes, BlockRoute]]
    http_routes: dict[tuple[str, int], dict[str, HttpHandler]]
    observers: list[ReplyObserver]
    shared: dict[str, object]
    corefile: str
    failure_observers: list[FailureObserver] = field(default_factory=list)

    @property
    def plugins(self) -> list[Plugin]:
        return [p for b in self.blocks for p in b.plugins]

    def find(self, name: str) -> list[Plugin]:
        """Every configured plugin with directive ``name``, across blocks."""
        return [p for p in self.plugins if p.name == name]


@dataclass
class _Pending:
    block: ServerBlock
    keys: tuple[ZoneKey, ...]
    by_name: dict[str, list[Directive]]
    ctx: SetupContext
    plugins: list[Plugin] = field(default_factory=list)


def build_config(
    blocks: Sequence[ServerBlock],
    registry: Registry,
    *,
    corefile: str = "Corefile",
    dns_port: int = 53,
    shared: dict[str, object] | None = None,
) -> Config:
    """Set up every plugin of every block; raise CorefileError on any mistake.

    ``shared`` seeds the state every plugin's setup context sees (the runner
    puts itself there as the ``Reloader``, so the reload plugin can ask for a reload).
    """
    shared = dict(shared or {})
    observers: list[ReplyObserver] = []
    shared["reply_observers"] = observers
    failure_observers: list[FailureObserver] = []
    shared["failure_observers"] = failure_observers
    pending: list[_Pending] = []
    for block in blocks:
        keys = tuple(normalize_keys(block, dns_port))
        if not keys:
            continue
        by_name: dict[str, list[Directive]] = {}
        for directive in block.directives:
            if directive.name not in registry:
                raise CorefileError(
                    unknown_directive(directive.name),
                    directive.file,
                    directive.line,
                    directive.column,
                )
            group = by_name.setdefault(directive.name, [])
            group.append(directive)
        ctx = SetupContext(
            block=block,
            keys=keys,
            corefile=corefile,
            dns_port=dns_port,
            shared=shared,
            blocks=list(blocks),
        )
        pending.append(_Pending(block, keys, by_name, ctx))

    # As CoreDNS: one directive at a time across all blocks, in chain order.
    for name in registry.order():
        for p in pending:
            directives = p.by_name.get(name)
            if not directives:
                continue
            cls = registry.get(name)
            if len(directives) > 1 and not cls.repeatable:
                d = directives[1]
                raise CorefileError(
                    f"plugin/{name}: this plugin can only be used once per Server Block",
                    d.file,
                    d.line,
                    d.column,
                )
            try:
                plugin = cls.setup(directives, p.ctx)
            except SetupError as exc:
                raise exc.to_corefile_error(name, p.block) from None
            except CorefileError:
                raise
            except (ValueError, OSError) as exc:
                d = directives[0]
                raise CorefileError(f"plugin/{name}: {exc}", d.file, d.line, d.column) from None
            # In chain order: SetupContext.plugins_after relies on it.
            p.plugins.append(plugin)
            p.ctx.plugins[name] = plugin

    configs: list[BlockConfig] = []
    routes: dict[ListenerKey, dict[bytes, BlockRoute]] = {}
    seen: dict[tuple[str, str, int, str], ServerBlock] = {}
    for p in pending:
        chain_plugins = [pl for pl in p.plugins if pl.serves_queries]
        empty = not any(map(in_coredns_chain, p.plugins))
        chain, _known = compile_chain(
            chain_plugins,
            End(
                chain_plugins[-1].name if chain_plugins else "",
                dns.rcode.REFUSED if empty else dns.rcode.SERVFAIL,
            ),
        )
        hosts = list(p.ctx.listen_hosts)
        config = BlockConfig(
            p.block, p.keys, hosts, p.plugins, chain, any(pl.any_class for pl in chain_plugins)
        )
        config.tcp_timeouts = p.ctx.tcp_timeouts
        config.udp_cap = p.ctx.udp_payload
        config.filters, config.view = tuple(p.ctx.query_filters), p.ctx.view
        known = known_path(chain_plugins)
        if known is not None:
            config.known_by, config.known = known[0].name, known[1]
        configs.append(config)
        for key in p.keys:
            for host in hosts or [""]:
                ident = (key.transport, key.zone, key.port, host)
                label = f"{key.transport}://{host}:{key.port}"
                on_listener = routes.setdefault((key.transport, host, key.port), {})
                route = BlockRoute(key.zone, config, label)
                shared_zone = on_listener.get(zone_wire(key.zone))
                if shared_zone is not None and (config.filters or _any_filtered(shared_zone)):
                    _warn_if_shadowed(shared_zone, p.block, key)
                    shared_zone.add_alternative(route)
                    continue
                if ident in seen:
                    first = seen[ident]
                    where = f" on {host}" if host else ""
                    tok = p.block.key_tokens[0] if p.block.key_tokens else None
                    raise CorefileError(
                        f"cannot serve {key}{where} - it is already defined "
                        f"at {first.file}:{first.line}",
                        tok.file if tok else p.block.file,
                        tok.line if tok else p.block.line,
                        tok.column if tok else p.block.column,
                    )
                seen[ident] = p.block
                on_listener[zone_wire(key.zone)] = route
    _check_overlap(routes)

    http: dict[tuple[str, int], dict[str, HttpHandler]] = {}
    for p in pending:
        for address, path, handler in p.ctx.http_routes:
            try:
                host, port = parse_address(address, 80)
            except ValueError as exc:
                raise CorefileError(str(exc), p.block.file, p.block.line, p.block.column) from None
            http.setdefault((host, port), {})[path] = handler
    return Config(configs, routes, http, observers, shared, corefile, failure_observers)


def _any_filtered(route: BlockRoute | None) -> bool:
    while route is not None:
        if route.config.filters:
            return True
        route = route.alternative
    return False


def _warn_if_shadowed(route: BlockRoute | None, block: ServerBlock, key: ZoneKey) -> None:
    """A block after an unfiltered one for the same zone is never reached: say so."""
    while route is not None:
        if not route.config.filters:
            first = route.config.block
            log.warning(
                "%s:%d: the server block for %s is never used: the block at %s:%d has no view "
                "and takes every query first (put filtered blocks before it)",
                block.file, block.line, key, first.file, first.line,
            )  # fmt: skip
            return
        route = route.alternative


def in_coredns_chain(plugin: Plugin) -> bool:
    """True for a plugin CoreDNS links into a block's handler chain.

    Those that serve queries, and those that are a handler in CoreDNS but not
    here (``coredns_handler``: *prometheus*, a reply observer here; *bufsize*,
    a setting of the block here). A block with none of them has no chain in CoreDNS, which
    answers it REFUSED (a block with only ``bind``, or empty); a chain that
    runs off its end answers SERVFAIL.
    """
    return plugin.serves_queries or plugin.coredns_handler


def _check_overlap(routes: dict[ListenerKey, dict[bytes, BlockRoute]]) -> None:
    """A zone served on one port both bound and unbound is ambiguous: refuse it."""
    for (transport, host, port), zones in routes.items():
        if not host:
            continue
        wildcard = routes.get((transport, "", port), {})
        for name_wire, route in zones.items():
            if name_wire in wildcard:
                block = route.config.block
                raise CorefileError(
                    f"cannot serve {transport}://{route.zone}:{port} on {host} - zone overlap "
                    f"listener capacity with {transport}://{route.zone}:{port}",
                    block.file,
                    block.line,
                    block.column,
                )


def describe(config: Config) -> list[str]:
    """One line per served key: normalised key, then the plugins in chain order."""
    lines = []
    for block in config.blocks:
        names = " ".join(p.name for p in block.plugins)
        for key in block.keys:
            lines.append(f"{key} {names}".rstrip())
    return lines
