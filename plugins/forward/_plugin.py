"""The forward plugin: queries to upstream name servers, safe against spoofing and failure.

All ``forward`` directives of a block make one plugin. A query goes to the
directive with the longest FROM that covers it (``except`` taken into
account); a query no directive covers goes to the next plugin. ``next``
RCODEs pass an upstream's answer on to the next directive that covers the
name, then to the next plugin.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import dns.rcode
import dns.rdatatype
import outcome
import trio

from pycorefile import Directive, Pending, Plugin, PluginError, Request, Result, SetupContext

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
MAX_FOLLOWERS = 1000
"""Identical queries that wait on one upstream query at most; the next one starts another."""
SWEEP_INTERVAL = 1.0
STATS_KEY = "forward.stats"
NO_HEALTHY = "no healthy proxies"
"""CoreDNS's error when no upstream could be tried."""

_FLIGHT_VARIANT = (b"\x00", b"\x01", b"\x02", b"\x03")
"""Appended to a query's key to make its flight's key: the RD bit and whether
the client sent EDNS, which the upstream's reply echoes (flags, OPT record)."""
_TAKE_OVER = object()
"""Handed to a follower that is to run the flight's remaining tries."""


__all__ = ["ForwardPlugin", "Forwarder"]


class _Follower:
    """A query waiting for the reply to an identical query already sent upstream."""

    __slots__ = ("deadline", "task")

    def __init__(self, task: trio.lowlevel.Task, deadline: float) -> None:
        self.task = task
        self.deadline = deadline


class _Flight:
    """One client question sent upstream, shared by every identical query meanwhile.

    The first query's task (the *runner*) makes the tries; the others
    (followers) wait, each until its own deadline, and each gets the reply
    with its own ID and question letter case. When the runner's own time is
    up (or it is cancelled) with tries left, the follower that may wait
    longest runs the remaining tries: no waiter's deadline or cancellation
    ends the upstream query for the others.
    """

    __slots__ = (
        "attempt", "attempts", "error", "followers", "held", "key", "max_size", "proto",
        "proxies", "question", "wire",
    )  # fmt: skip

    def __init__(self, key: bytes, request: Request, proxies: list[Proxy], attempts: int) -> None:
        end = request.name_end
        self.key = key
        self.wire = request.wire
        self.question = Question(request.key[: end - 12], request.wire[end : end + 4])
        self.proto = request.proto
        self.max_size = request.max_size
        """The largest reply a waiter can take: a truncated UDP reply below it is asked
        again over TCP."""
        self.proxies = proxies
        self.attempts = attempts
        self.attempt = 0
        """Tries made so far (by every runner)."""
        self.held: tuple[bytes, Checked] | None = None
        """The last reply kept (``failover`` goes on after one)."""
        self.error = ""
        """The last try's error, as CoreDNS reports it when no upstream answered."""
        self.followers: list[_Follower] = []


class Forwarder:
    """One ``forward`` directive at run time: its upstreams and its queries in flight."""

    def __init__(self, config: ForwardConfig, stats: ForwardStats) -> None:
        self.config = config
        self.stats = stats
        self.proxies = [Proxy(a, config, stats.upstream(a.label)) for a in config.upstreams]
        self.in_flight = 0
        self.flights: dict[bytes, _Flight] = {}
        """Questions sent upstream and not yet answered, by query key plus RD and EDNS."""
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

    def limit_error(self) -> PluginError:
        """CoreDNS's answer beyond ``max_concurrent``: REFUSED, with its error text."""
        return PluginError(
            f"concurrent queries exceeded maximum {self.config.max_concurrent}", dns.rcode.REFUSED
        )

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

    async def forward(self, request: Request) -> tuple[bytes, int]:
        """The reply for the client and the upstream's rcode.

        Raises PluginError when no upstream answered (SERVFAIL, with the last
        try's error, CoreDNS's ``return dns.RcodeServerFailure, err``) and
        beyond ``max_concurrent`` (REFUSED). An identical query already sent
        upstream is not sent again: this one waits for that reply.
        """
        if self.over_limit():
            raise self.limit_error()
        self.in_flight += 1
        try:
            key = request.key + _FLIGHT_VARIANT[(request.wire[2] & 1) | (2 if request.edns else 0)]
            # HINFO is never merged: loop probes (the loop plugin's, ours or
            # another server's) must travel every round of a forwarding loop to
            # be counted, here and in the other servers of the loop.
            merge = request.qtype != _HINFO
            flight = self.flights.get(key) if merge else None
            if flight is None or len(flight.followers) >= MAX_FOLLOWERS:
                proxies = self.order()
                if not proxies:
                    raise PluginError(NO_HEALTHY)
                attempts = self.config.max_connect_attempts or 2 * len(proxies)
                flight = _Flight(key, request, proxies, attempts)
                if merge:
                    self.flights[key] = flight
                data, checked = await self._run(flight, request)
            else:
                data, checked = await self._follow(flight, request)
        finally:
            self.in_flight -= 1
        if not checked.has_question:
            return request.error(checked.rcode), checked.rcode
        reply = client_reply(data, checked, request.wire, request.name_end, request.edns)
        return reply, checked.rcode

    async def _run(self, flight: _Flight, request: Request) -> tuple[bytes, Checked]:
        """Make the flight's tries until a reply, the last try, or the end of our own time."""
        # One deadline for the whole query, folded into each try's deadline
        # (no cancel scope per query: a UDP try's channel keeps the time).
        overall = trio.current_time() + OVERALL_DEADLINE - request.duration
        try:
            held = await self._tries(flight, overall)
        except BaseException:
            if not self._hand_over(flight):
                self._land(flight, flight.error or NO_HEALTHY)
            raise
        if held is not None:
            self._land(flight, held)
            return held
        message = flight.error or NO_HEALTHY
        if flight.attempt >= flight.attempts or not self._hand_over(flight):
            self._land(flight, message)
        raise PluginError(message)

    async def _tries(self, flight: _Flight, overall: float) -> tuple[bytes, Checked] | None:
        """The reply to keep, or None when no upstream answered by ``overall`` (a trio time)."""
        config = self.config
        proxies = flight.proxies
        while flight.attempt < flight.attempts:
            if trio.current_time() >= overall:
                break
            attempt = flight.attempt
            flight.attempt = attempt + 1
            proxy = proxies[attempt % len(proxies)]
            transport = proxy.transport(flight.proto, config.force_tcp, config.prefer_udp)
            result = await self.try_once(flight, proxy, transport, overall)
            if result is None:
                continue
            data, checked = result
            if checked.truncated and transport == "udp" and flight.max_size > max(len(data), 512):
                # A waiter could take more than the upstream sent: ask again over
                # TCP. (A plain UDP client takes 512 bytes at most: TC goes to it as is.)
                fuller = await self.try_once(flight, proxy, "tcp", overall)
                if fuller is not None:
                    data, checked = fuller
            flight.held = (data, checked)
            if checked.rcode in config.failover_rcodes and attempt + 1 < len(proxies):
                continue
            break
        return flight.held

    async def _follow(self, flight: _Flight, request: Request) -> tuple[bytes, Checked]:
        """Wait, until our own deadline at most, for the reply to the flight's query."""
        deadline = trio.current_time() + OVERALL_DEADLINE - request.duration
        follower = _Follower(trio.lowlevel.current_task(), deadline)
        followers = flight.followers
        followers.append(follower)
        if request.max_size > flight.max_size:
            flight.max_size = request.max_size

        def abort(_: object) -> trio.lowlevel.Abort:
            followers.remove(follower)  # our time is up, or we are cancelled: the flight goes on
            return trio.lowlevel.Abort.SUCCEEDED

        result: object = None
        with trio.move_on_at(deadline):
            result = await trio.lowlevel.wait_task_rescheduled(abort)
        if result is _TAKE_OVER:
            return await self._run(flight, request)
        if isinstance(result, tuple):
            return result
        raise PluginError(result if isinstance(result, str) else flight.error or NO_HEALTHY)

    def _hand_over(self, flight: _Flight) -> bool:
        """Wake the follower that may wait longest to run the remaining tries; False if none."""
        followers = flight.followers
        if not followers:
            return False
        latest = max(followers, key=lambda f: f.deadline)
        if latest.deadline <= trio.current_time():
            return False  # no follower has time left: they get the error now
        followers.remove(latest)
        trio.lowlevel.reschedule(latest.task, outcome.Value(_TAKE_OVER))
        return True

    def _land(self, flight: _Flight, result: tuple[bytes, Checked] | str) -> None:
        """The flight is over: every follower gets the reply, or the error text."""
        if self.flights.get(flight.key) is flight:
            del self.flights[flight.key]
        followers = flight.followers
        if followers:
            for follower in followers:
                trio.lowlevel.reschedule(follower.task, outcome.Value(result))
            followers.clear()

    async def try_once(
        self, flight: _Flight, proxy: Proxy, transport: str, overall: float = math.inf
    ) -> tuple[bytes, Checked] | None:
        """One try at one upstream under a fresh random ID; None when it failed.

        It ends after the try timeout, or at ``overall`` (a trio time) if
        sooner. A failure's text is kept in ``flight.error``.
        """
        qid = new_id()
        counters = proxy.counters
        counters.requests += 1
        started = trio.current_time()
        deadline = min(started + self.config.read_timeout, overall)
        try:
            data, checked = await proxy.exchange(
                _with_id(flight.wire, qid), qid, flight.question, transport, deadline
            )
        except UpstreamFailure as exc:
            log.debug("plugin/forward: %s: %s", proxy.label, exc)
            flight.error = str(exc)
            counters.failed(exc.reason)
            if self.config.max_fails:
                proxy.trouble.set()
            return None
        except LocalFailure as exc:
            log.warning("plugin/forward: cannot query %s: %s", proxy.label, exc)
            flight.error = str(exc)
            return None
        counters.answered(rcode_label(checked.rcode), trio.current_time() - started)
        return data, checked

    async def answered(self, proxy: Proxy, wire: bytes, timeout: float) -> bool:
        """Whether a query of our own (a health check) gets any reply in time."""
        transport = proxy.transport("udp", self.config.force_tcp, False)
        qid = new_id()
        deadline = trio.current_time() + timeout
        try:
            await proxy.exchange(_with_id(wire, qid), qid, Question.of(wire), transport, deadline)
        except (UpstreamFailure, LocalFailure):
            return False
        return True

    async def health_loop(self, proxy: Proxy) -> None:
        """Probe an upstream after a failed try, every interval, until it answers."""
        health = self.config.health
        wire = probe_query(health.domain, dns.rdatatype.NS, health.recursion)
        timeout = min(HEALTH_PROBE_TIMEOUT, self.config.read_timeout)
        max_fails = self.config.max_fails
        while True:
            await proxy.trouble.wait()
            while not await self.answered(proxy, wire, timeout):
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
"""The type of loop probes, which are never merged with identical queries in flight."""


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

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> ForwardPlugin:
        # As CoreDNS, forwarding to our own address is a loop only the loop plugin
        # looks for; with it in the block, it is refused here, at load time.
        configs = parse_forward(
            directives,
            listen_ports=[key.port for key in ctx.keys] if ctx.plugin("loop") else (),
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

    def handle(self, request: Request) -> Result:
        covering = self.covering(request)
        if not covering:
            return self.next.handle(request)
        if covering[0].over_limit():
            raise covering[0].limit_error()  # REFUSED now, without waiting
        return Pending(self._forward(request, covering))

    async def _forward(self, request: Request, covering: list[Forwarder]) -> Result:
        """Ask the covering directives' upstreams in turn; the reply, or the next plugin's."""
        for index, forwarder in enumerate(covering):
            reply, rcode = await forwarder.forward(request)
            if rcode not in forwarder.config.next_rcodes:
                return reply
            if index + 1 < len(covering):
                continue
            if self.is_last:
                return reply  # no plugin after us: the upstream's answer stands
            # The next plugin writes the reply: it is credited, not us (we were
            # credited when we started waiting).
            request.answered_by = ""
            return self.next.handle(request)
        raise AssertionError("unreachable")

    # -- Lifecycle ----------------------------------------------------------------

    async def run(self) -> None:
        """Health checks of failed upstreams, idle sweeping."""
        async with trio.open_nursery() as nursery:
            for forwarder in self.forwarders:
                if forwarder.config.max_fails:
                    for proxy in forwarder.proxies:
                        nursery.start_soon(forwarder.health_loop, proxy)
            nursery.start_soon(self._sweep)

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
