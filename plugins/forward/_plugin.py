"""The forward plugin: queries to upstream name servers, safe against spoofing and failure.

All ``forward`` directives of a block make one plugin. A query goes to the
directive with the longest FROM that covers it (``except`` taken into
account); a query no directive covers goes to the next plugin. ``next``
RCODEs pass an upstream's answer on to the next directive that covers the
name, then to the next plugin.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import dns.rcode
import dns.rdatatype
import trio

from pycorefile import Directive, Plugin, Reply, Request, SetupContext
from pycorefile._chain import End
from pycorefile._server import StartupError

from ._message import Checked, Question, client_reply, new_id, probe_query, rcode_label
from ._message import with_id as _with_id
from ._metrics import ForwardStats
from ._parse import ForwardConfig, parse_forward
from ._proxy import LocalFailure, Proxy, UpstreamFailure

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("pycorefile")

OVERALL_DEADLINE = 5.0
"""A query gets SERVFAIL once this long has passed since it arrived (CoreDNS's 5 s)."""
HEALTH_PROBE_TIMEOUT = 1.0
"""How long a health check waits (CoreDNS's 1 s; ``read_timeout`` if that is shorter)."""
LOOP_PROBE_WAIT = 0.5
"""How long startup waits for the loop probes' replies (they are not needed to start)."""
LOOP_SIGHTINGS = 3
"""A loop probe seen this often (sent once, back twice) is a loop: CoreDNS's rule."""
SWEEP_INTERVAL = 1.0
STATS_KEY = "forward.stats"


__all__ = ["ForwardPlugin", "Forwarder"]


class Forwarder:
    """One ``forward`` directive at run time: its upstreams and its queries in flight."""

    def __init__(self, config: ForwardConfig, stats: ForwardStats) -> None:
        self.config = config
        self.stats = stats
        self.proxies = [Proxy(a, config, stats.upstream(a.label)) for a in config.upstreams]
        self.in_flight = 0
        self._next_start = 0

    @property
    def zone(self) -> str:
        return self.config.zone

    def over_limit(self) -> bool:
        """True (and counted) when ``max_concurrent`` queries are already in flight."""
        limit = self.config.max_concurrent
        if limit and self.in_flight >= limit:
            self.stats.max_concurrent_rejects += 1
            return True
        return False

    def order(self) -> list[Proxy]:
        """The upstreams to try, in policy order, the down ones left out.

        With every upstream down: all of them in random order (the health
        checks may be what is broken), or none with
        ``failfast_all_unhealthy_upstreams``.
        """
        proxies = self.proxies
        n = len(proxies)
        max_fails = self.config.max_fails
        if n == 1 and not proxies[0].down(max_fails):
            return proxies  # the usual single upstream, up: nothing to order
        policy = self.config.policy
        if n == 1:
            ordered = proxies
        elif policy == "random":
            ordered = random.sample(proxies, n)
        elif policy == "round_robin":
            start = self._next_start % n
            self._next_start = start + 1
            ordered = proxies[start:] + proxies[:start]
        else:
            ordered = proxies
        if max_fails:
            healthy = [p for p in ordered if not p.down(max_fails)]
            if not healthy:
                self.stats.healthcheck_broken += 1
                return [] if self.config.failfast else random.sample(proxies, n)
            return healthy
        return ordered

    async def forward(self, request: Request) -> tuple[bytes, int | None]:
        """The reply for the client and the upstream's rcode (None: no upstream answered)."""
        if self.over_limit():
            return request.error(dns.rcode.REFUSED), None
        self.in_flight += 1
        try:
            return await self._forward(request)
        finally:
            self.in_flight -= 1

    async def _forward(self, request: Request) -> tuple[bytes, int | None]:
        config = self.config
        proxies = self.order()
        if not proxies:
            return request.error(dns.rcode.SERVFAIL), None
        end = request.name_end
        question = Question(request.key[: end - 12], request.wire[end : end + 4])
        attempts = config.max_connect_attempts or 2 * len(proxies)
        held: tuple[bytes, Checked] | None = None
        # One deadline for the whole query, folded into each try's deadline
        # (no cancel scope per query: a UDP try's channel keeps the time).
        overall = trio.current_time() + OVERALL_DEADLINE - request.duration
        for attempt in range(attempts):
            if trio.current_time() >= overall:
                break
            proxy = proxies[attempt % len(proxies)]
            transport = proxy.transport(request.proto, config.force_tcp, config.prefer_udp)
            result = await self.try_once(proxy, request.wire, question, transport, overall)
            if result is None:
                continue
            data, checked = result
            if checked.truncated and transport == "udp" and request.max_size > max(len(data), 512):
                # The client could take more than the upstream sent: ask again over
                # TCP. (A plain UDP client takes 512 bytes at most: TC goes to it as is.)
                fuller = await self.try_once(proxy, request.wire, question, "tcp", overall)
                if fuller is not None:
                    data, checked = fuller
            held = (data, checked)
            if checked.rcode in config.failover_rcodes and attempt + 1 < len(proxies):
                continue
            break
        if held is None:
            return request.error(dns.rcode.SERVFAIL), None
        data, checked = held
        if not checked.has_question:
            return request.error(checked.rcode), checked.rcode
        return client_reply(data, checked, request.wire, end, request.edns), checked.rcode

    async def try_once(
        self,
        proxy: Proxy,
        wire: bytes,
        question: Question,
        transport: str,
        overall: float = math.inf,
        timeout: float = 0.0,
    ) -> tuple[bytes, Checked] | None:
        """One try at one upstream under a fresh random ID; None when it failed.

        It ends after the try timeout, or at ``overall`` (a trio time) if sooner.
        """
        qid = new_id()
        counters = proxy.counters
        counters.requests += 1
        started = trio.current_time()
        deadline = min(started + (timeout or self.config.read_timeout), overall)
        try:
            data, checked = await proxy.exchange(
                _with_id(wire, qid), qid, question, transport, deadline
            )
        except UpstreamFailure as exc:
            log.debug("plugin/forward: %s: %s", proxy.label, exc)
            counters.failed(exc.reason)
            if self.config.max_fails:
                proxy.trouble.set()
            return None
        except LocalFailure as exc:
            log.warning("plugin/forward: cannot query %s: %s", proxy.label, exc)
            return None
        counters.answered(rcode_label(checked.rcode), trio.current_time() - started)
        return data, checked

    async def probe(self, proxy: Proxy, wire: bytes, question: Question) -> bool:
        """One health check: any DNS reply in time means healthy."""
        config = self.config
        timeout = min(HEALTH_PROBE_TIMEOUT, config.read_timeout)
        transport = proxy.transport("udp", config.force_tcp, False)
        qid = new_id()
        with trio.move_on_after(timeout):
            try:
                await proxy.exchange(_with_id(wire, qid), qid, question, transport)
            except (UpstreamFailure, LocalFailure):
                return False
            return True
        return False

    async def health_loop(self, proxy: Proxy) -> None:
        """Probe an upstream after a failed try, every interval, until it answers."""
        health = self.config.health
        wire = probe_query(health.domain, dns.rdatatype.NS, health.recursion)
        question = Question.of(wire)
        max_fails = self.config.max_fails
        while True:
            await proxy.trouble.wait()
            while not await self.probe(proxy, wire, question):
                proxy.fails += 1
                proxy.counters.healthcheck_failures += 1
                if proxy.fails == max_fails:
                    log.warning(
                        "plugin/forward: upstream %s is down (%d failed health checks)",
                        proxy.label,
                        proxy.fails,
                    )
                await trio.sleep(health.interval)
            if proxy.down(max_fails):
                log.info("plugin/forward: upstream %s is up again", proxy.label)
            proxy.fails = 0
            proxy.trouble = trio.Event()


_HINFO = dns.rdatatype.HINFO
"""The type of loop probes: other queries need no name lookup to rule them out."""


@dataclass
class _LoopProbe:
    """A loop probe's name sent through an upstream, and how often it was seen."""

    forwarder: Forwarder
    proxy: Proxy
    sightings: int = 1


class ForwardPlugin(Plugin):
    """CoreDNS's forward: proxies queries to upstreams over UDP, TCP or TLS."""

    repeatable = True
    any_class = True

    def __init__(
        self, configs: Sequence[ForwardConfig], stats: ForwardStats | None = None,
        owns_stats: bool = True,
    ) -> None:  # fmt: skip
        self.stats = stats or ForwardStats()
        self.owns_stats = owns_stats
        self.forwarders = [Forwarder(c, self.stats) for c in configs]
        # Longest FROM first; Corefile order among equals (sorted is stable).
        self.by_zone = sorted(self.forwarders, key=lambda f: -len(f.zone))
        only = self.forwarders[0].config if len(self.forwarders) == 1 else None
        # The usual ``forward . UPSTREAMS``: every name, no matching needed.
        self._everything = (
            self.forwarders if only is not None and only.zone == "." and not only.ignored else None
        )
        self.loop_probes: dict[str, _LoopProbe] = {}
        self.loop_error: str | None = None
        self.loop_found = trio.Event()

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> ForwardPlugin:
        configs = parse_forward(
            directives,
            listen_ports=[key.port for key in ctx.keys],
            listen_hosts=ctx.listen_hosts,
        )
        stats, owns = _shared_stats(ctx)
        return cls(configs, stats, owns)

    @property
    def configs(self) -> list[ForwardConfig]:
        return [f.config for f in self.forwarders]

    def covering(self, request: Request) -> list[Forwarder]:
        """The directives that forward the query's name, longest FROM first."""
        if self._everything is not None:
            return self._everything  # the name is not even read
        name = request.name
        return [f for f in self.by_zone if f.config.covers(name)]

    # -- Serving ----------------------------------------------------------------

    def serve_now(self, request: Request) -> Reply | None:
        covering = self.covering(request)
        if not covering:
            return self.next.serve_now(request)
        if covering[0].over_limit():
            return request.error(dns.rcode.REFUSED)
        return None

    async def serve(self, request: Request) -> Reply:
        probes = self.loop_probes
        if (
            probes
            and request.qtype == _HINFO
            and request.name in probes
            and self._loop_probe_seen(request)
        ):
            return request.error(dns.rcode.SERVFAIL)
        covering = self.covering(request)
        if not covering:
            return await self.next.serve(request)
        for index, forwarder in enumerate(covering):
            reply, rcode = await forwarder.forward(request)
            if rcode is None or rcode not in forwarder.config.next_rcodes:
                return reply
            if index + 1 < len(covering):
                continue
            if isinstance(self.next, End):
                return reply  # no plugin after us: the upstream's answer stands
            return await self.next.serve(request)
        raise AssertionError("unreachable")

    # -- Lifecycle ----------------------------------------------------------------

    def ready(self) -> bool:
        return not self.loop_found.is_set()

    async def startup(self) -> None:
        """Send a loop probe through every upstream (replies are not waited for long)."""
        with trio.move_on_after(LOOP_PROBE_WAIT):
            async with trio.open_nursery() as nursery:
                for forwarder in self.forwarders:
                    for proxy in forwarder.proxies:
                        name = _probe_name(forwarder.zone)
                        if name is None:
                            continue
                        self.loop_probes[name] = _LoopProbe(forwarder, proxy)
                        nursery.start_soon(self._send_loop_probe, forwarder, proxy, name)

    async def _send_loop_probe(self, forwarder: Forwarder, proxy: Proxy, name: str) -> None:
        wire = probe_query(name, dns.rdatatype.HINFO, True)
        transport = proxy.transport("udp", forwarder.config.force_tcp, False)
        qid = new_id()
        with trio.move_on_after(forwarder.config.read_timeout):
            with contextlib.suppress(UpstreamFailure, LocalFailure):
                await proxy.exchange(_with_id(wire, qid), qid, Question.of(wire), transport)

    def _loop_probe_seen(self, request: Request) -> bool:
        """Count a loop probe arriving here; True (answer SERVFAIL) once it is a loop."""
        probe = self.loop_probes[request.name]
        probe.sightings += 1
        if probe.sightings < LOOP_SIGHTINGS:
            return False
        if self.loop_error is None:
            local = request.local
            where = f"{local[0]}:{local[1]}" if local else "this server"
            self.loop_error = (
                f"Loop ({request.client[0]}:{request.client[1]} -> {where}) detected for zone "
                f'"{probe.forwarder.zone}" through upstream {probe.proxy.label}: it sends our '
                f'queries back to us. Query: "HINFO {request.name}". Point forward at a name '
                f"server that does not forward to this one."
            )
            log.error("plugin/forward: %s", self.loop_error)
            self.loop_found.set()
        return True

    async def run(self) -> None:
        """Health checks of failed upstreams, idle-connection sweeping, loop reporting."""
        async with trio.open_nursery() as nursery:
            for forwarder in self.forwarders:
                if forwarder.config.max_fails:
                    for proxy in forwarder.proxies:
                        nursery.start_soon(forwarder.health_loop, proxy)
            nursery.start_soon(self._sweep)
            await self.loop_found.wait()
            nursery.cancel_scope.cancel()
        raise StartupError(f"plugin/forward: {self.loop_error}")

    async def _sweep(self) -> None:
        expires = [f.config.expire for f in self.forwarders if f.config.expire > 0]
        interval = min([SWEEP_INTERVAL, *expires])
        while True:
            await trio.sleep(interval)
            for forwarder in self.forwarders:
                for proxy in forwarder.proxies:
                    proxy.sweep()

    async def shutdown(self) -> None:
        for forwarder in self.forwarders:
            for proxy in forwarder.proxies:
                proxy.close()

    def metrics(self) -> Iterable[Metric]:
        if self.owns_stats:
            yield from self.stats.families()


def _probe_name(zone: str) -> str | None:
    """``<random>.<random>.ZONE``, as CoreDNS's loop plugin asks; None if too long."""
    name = f"{random.getrandbits(63)}.{random.getrandbits(63)}.{'' if zone == '.' else zone}"
    return name if len(name) <= 250 else None


def _shared_stats(ctx: SetupContext) -> tuple[ForwardStats, bool]:
    """The configuration's forward counts, carried over from the running one on reload.

    Returns the stats and whether this plugin is the one that reports them.
    """
    stats = ctx.shared.get(STATS_KEY)
    if isinstance(stats, ForwardStats):
        return stats, False
    runner = ctx.shared.get("runner")
    running = getattr(getattr(runner, "server", None), "config", None)
    previous = running.shared.get(STATS_KEY) if running is not None else None
    stats = previous if isinstance(previous, ForwardStats) else ForwardStats()
    ctx.shared[STATS_KEY] = stats
    return stats, True
