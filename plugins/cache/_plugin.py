"""The cache plugin: CoreDNS's cache, answered from stored wire bytes.

A hit is a dictionary lookup on ``request.key`` plus ``PreparedReply.render``:
no dnspython. Replies from the next plugin are classified and prepared once,
on the miss path. Refreshes (prefetch, stale entries) run in the plugin's
background task, fed through a bounded channel, so ``serve_now`` never waits.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import dns.exception
import dns.message
import dns.rcode
import trio

from pycorefile import Directive, Plugin, Reply, Request, SetupContext
from pycorefile._wire import HEADER_LEN, MAX_TCP
from pycorefile._zones import in_zone

from ._classify import Category, classify, quick_classify, stored_form
from ._parse import CacheConfig, parse_cache
from ._store import Entry, Shelf

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("pycorefile")

REFRESH_QUEUE = 256
"""Refreshes waiting for the background task; more are dropped (the old entry stays)."""
REFRESH_CONCURRENCY = 32
REFRESH_DEADLINE = 10.0
"""Seconds a background refresh may take before it counts as failed."""

_Job = tuple[Request, Entry]
_SUCCESS = Category.SUCCESS


class _Counts:
    """Plain counters for one ``server`` label, turned into metrics at scrape time."""

    __slots__ = (
        "drops", "hits_denial", "hits_success", "misses", "prefetch", "requests", "served_stale",
    )  # fmt: skip

    def __init__(self) -> None:
        self.requests = 0
        self.misses = 0
        self.hits_success = 0
        self.hits_denial = 0
        self.prefetch = 0
        self.drops = 0
        self.served_stale = 0


class CachePlugin(Plugin):
    """Answer repeated questions from memory; store what the next plugin answers."""

    def __init__(self, config: CacheConfig, server_label: str = "") -> None:
        self.config = config
        self.server_label = server_label
        self.zones_label = ",".join(config.zones)
        self.clock: Callable[[], float] = time.monotonic
        """Seconds, for ages and expiry; tests replace it to move time."""
        self.wall_clock: Callable[[], float] = time.time
        """Seconds since the epoch, for RRSIG validity periods."""
        self.success = Shelf(config.success.capacity)
        self.denial = Shelf(config.denial.capacity)
        self._success_get = self.success.get
        self._denial_get = self.denial.get
        self._all_zones = "." in config.zones
        self._keepttl = config.keepttl
        self._prefetch = config.prefetch if config.prefetch and config.prefetch.amount else None
        self._stale = config.serve_stale
        self._counts: dict[str, _Counts] = {}
        self._jobs, self._job_queue = trio.open_memory_channel[_Job](REFRESH_QUEUE)

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> CachePlugin:
        key = ctx.keys[0]
        host = ctx.listen_hosts[0] if ctx.listen_hosts else ""
        return cls(parse_cache(directives, ctx), f"{key.transport}://{host}:{key.port}")

    # -- Answering ------------------------------------------------------------

    def serve_now(self, request: Request) -> Reply | None:
        key = request.key
        entry = self._success_get(key) or self._denial_get(key)
        if entry is not None:
            now = self.clock()
            if now < entry.expires:
                return self._hit(request, entry, now)
            stale = self._stale
            if stale is not None and now < entry.expires + stale.duration and entry.serves_stale:
                if not stale.verify or now < entry.recheck_at:
                    return self._serve_stale(request, entry, now)
                reply = self.next.serve_now(request)
                if reply is None:
                    return None
                return self._verified(request, reply, entry, self.clock())
        if request.qdcount != 1 or not self._in_zone(request):
            return self.next.serve_now(request)
        reply = self.next.serve_now(request)
        if reply is None:
            return None
        counts = self._count(request)
        counts.requests += 1
        counts.misses += 1
        return self._settle(request, reply, self.clock(), entry)

    async def serve(self, request: Request) -> Reply:
        key = request.key
        entry = self._success_get(key) or self._denial_get(key)
        if entry is not None:
            now = self.clock()
            if now < entry.expires:
                return self._hit(request, entry, now)
            stale = self._stale
            if stale is not None and now < entry.expires + stale.duration and entry.serves_stale:
                if not stale.verify or now < entry.recheck_at:
                    return self._serve_stale(request, entry, now)
                answer = await self._ask(request, stale.verify_timeout)
                return self._verified(request, answer, entry, self.clock())
        if request.qdcount != 1 or not self._in_zone(request):
            return await self.next.serve(request)
        counts = self._count(request)
        counts.requests += 1
        counts.misses += 1
        reply = await self.next.serve(request)
        return self._settle(request, reply, self.clock(), entry)

    def serve_known(
        self, wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
    ) -> bytes | None:
        # The server's fast path: a live entry, with nothing to decide per
        # request (prefetch needs the Request to refresh); else the chain runs.
        if self._prefetch is not None:
            return None
        entry = self._success_get(key) or self._denial_get(key)
        if entry is None:
            return None
        now = self.clock()
        if now >= entry.expires:
            return None
        counts = self._counts.get(server) or self._count_for(server)
        return self._answer(entry, now, counts, wire, name_end, edns, do)

    def _hit(self, request: Request, entry: Entry, now: float) -> bytes:
        counts = self._counts.get(request.route.server) or self._count(request)
        if self._prefetch is not None:
            self._consider_prefetch(request, entry, now, counts)
        return self._answer(
            entry, now, counts, request.wire, request.name_end, request.edns, request.do
        )

    def _answer(
        self, entry: Entry, now: float, counts: _Counts, wire: bytes, name_end: int,
        edns: bool, do: bool,
    ) -> bytes:  # fmt: skip
        """A live entry's reply to the query ``wire``, counted as a hit (the hot path)."""
        counts.requests += 1
        if entry.category is _SUCCESS:
            counts.hits_success += 1
        else:
            counts.hits_denial += 1
        entry.used = True
        view = entry.view
        if not self._keepttl:
            age = int(now - entry.stored)
            if age > entry.view_age:
                view = entry.aged(age)
        return view.render(wire, name_end, edns, do)

    def _serve_stale(
        self, request: Request, entry: Entry, now: float, refresh: bool = True
    ) -> bytes:
        """An expired entry (within ``serve_stale``), answered now; refreshed behind."""
        assert self._stale is not None
        counts = self._count(request)
        counts.requests += 1
        counts.served_stale += 1
        if entry.category is Category.SUCCESS:
            counts.hits_success += 1
        else:
            counts.hits_denial += 1
        entry.used = True
        if refresh and now >= entry.recheck_at:
            self._schedule(request, entry)
        view = entry.stale(self._stale.response_ttl)
        return view.render(request.wire, request.name_end, request.edns, request.do)

    def _verified(self, request: Request, answer: Reply | None, entry: Entry, now: float) -> Reply:
        """``serve_stale verify``: upstream's answer if it is one, else the stale entry."""
        assert self._stale is not None
        if answer is not None:
            out, fresh = self._prepare(request, answer, now)
            if _rcode(out) in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
                if fresh is None:
                    return out  # an answer, just not one to keep (truncated, ...)
                if not self._keep_old(entry, fresh.category, now):
                    counts = self._count(request)
                    counts.requests += 1
                    counts.misses += 1
                    self._put(request.key, fresh, entry)
                    return fresh.view.render(
                        request.wire, request.name_end, request.edns, request.do
                    )
        entry.recheck_at = now + self._stale.failure_recheck
        return self._serve_stale(request, entry, now, refresh=False)

    async def _ask(self, request: Request, timeout: float) -> Reply | None:
        """The next plugin's reply, or None when it failed or took longer than ``timeout``."""
        try:
            if timeout <= 0:
                return await self.next.serve(request)
            with trio.move_on_after(timeout):
                return await self.next.serve(request)
        except Exception as exc:
            log.warning("plugin/cache: refreshing %s failed: %s", request.name, exc)
        return None

    # -- Storing --------------------------------------------------------------

    def _settle(self, request: Request, reply: Reply, now: float, old: Entry | None) -> Reply:
        """Store a reply from the next plugin if it may be; return what to send."""
        out, entry = self._prepare(request, reply, now)
        if entry is None:
            if old is not None:
                self._forget(request.key, old)
            return out
        self._put(request.key, entry, old)
        # The first answer goes out exactly as later hits will: clamped TTLs, our OPT.
        return entry.view.render(request.wire, request.name_end, request.edns, request.do)

    def _prepare(self, request: Request, reply: Reply, now: float) -> tuple[Reply, Entry | None]:
        """The reply to send (rendered once if it was a message) and the entry to store."""
        msg: dns.message.Message | None = None
        if isinstance(reply, dns.message.Message):
            msg = reply
            try:
                wire = reply.to_wire(max_size=MAX_TCP)
            except (dns.exception.DNSException, ValueError):
                return reply, None
            reply = wire
        else:
            wire = bytes(reply)
        if len(wire) < HEADER_LEN or request.qdcount != 1:
            return reply, None
        question_end = request.name_end + 4
        if wire[4:6] != b"\x00\x01" or wire[HEADER_LEN:question_end].lower() != request.key[:-2]:
            self._count(request).drops += 1
            return reply, None
        category = quick_classify(wire, request.qtype)
        if category is None:
            if msg is None:
                try:
                    msg = dns.message.from_wire(wire, ignore_trailing=True)
                except (dns.exception.DNSException, ValueError):
                    return reply, None
            category = classify(
                msg, msg.question[0].name, request.qtype, request.do, self.wall_clock()
            )
        if category is Category.OTHER or self._disabled(category, request):
            return reply, None
        config = self.config
        if category is Category.SERVFAIL and config.servfail_ttl <= 0:
            return reply, None
        settings = config.success if category is Category.SUCCESS else config.denial
        stored, duration, offsets = stored_form(
            wire, category, settings, config.servfail_ttl, request.do
        )
        if duration <= 0:
            return reply, None
        return reply, Entry(stored, category, now, duration, offsets)

    def _keep_old(self, old: Entry, category: Category, now: float) -> bool:
        """True when a refresh's reply must not replace the entry it refreshes.

        A SERVFAIL never hides a usable answer, and with ``serve_stale_policy
        prefer_positive`` a denial does not replace an expired positive answer.
        """
        if category is Category.SERVFAIL:
            return old.category is not Category.SERVFAIL
        stale = self._stale
        return (
            stale is not None
            and stale.prefer_positive
            and category.denial
            and old.category is Category.SUCCESS
            and now >= old.expires
        )

    def _put(self, key: bytes, entry: Entry, old: Entry | None) -> None:
        if old is not None:
            entry.hits = old.hits
            entry.last_hit = old.last_hit
        if entry.category is Category.SUCCESS:
            self.success.put(key, entry)
            self.denial.remove(key)
        else:
            self.denial.put(key, entry)
            self.success.remove(key)

    def _forget(self, key: bytes, old: Entry) -> None:
        """Drop an expired entry that nothing replaced (unless another task already did)."""
        for shelf in (self.success, self.denial):
            if shelf.get(key) is old:
                shelf.remove(key)

    def _in_zone(self, request: Request) -> bool:
        if self._all_zones:
            return True
        name = request.name
        return any(in_zone(name, zone) for zone in self.config.zones)

    def _disabled(self, category: Category, request: Request) -> bool:
        config = self.config
        zones = config.disable_denial if category.denial else config.disable_success
        if not zones:
            return False
        name = request.name
        return any(in_zone(name, zone) for zone in zones)

    # -- Refreshing in the background ----------------------------------------

    def _consider_prefetch(
        self, request: Request, entry: Entry, now: float, counts: _Counts
    ) -> None:
        """Count the hit; refresh a popular entry whose TTL is nearly spent."""
        prefetch = self._prefetch
        assert prefetch is not None
        if now - entry.last_hit > prefetch.duration:
            entry.hits = 1
        else:
            entry.hits += 1
        entry.last_hit = now
        if entry.hits < prefetch.amount or entry.refreshing:
            return
        threshold = math.ceil(prefetch.percentage * entry.duration / 100)
        if entry.remaining(now) <= threshold and self._schedule(request, entry):
            counts.prefetch += 1

    def _schedule(self, request: Request, entry: Entry) -> bool:
        """Queue a refresh of ``entry`` (at most one at a time); False when not queued."""
        if entry.refreshing:
            return False
        copy = Request(request.wire, request.client, request.proto, request.local)
        copy.route = request.route
        copy.max_size = MAX_TCP
        try:
            self._jobs.send_nowait((copy, entry))
        except trio.WouldBlock:
            return False
        entry.refreshing = True
        return True

    async def run(self) -> None:
        """Run queued refreshes, a bounded number at a time."""
        limiter = trio.Semaphore(REFRESH_CONCURRENCY)
        async with trio.open_nursery() as nursery:
            async for request, entry in self._job_queue:
                await limiter.acquire()
                nursery.start_soon(self._refresh, request, entry, limiter)

    async def _refresh(self, request: Request, old: Entry, limiter: trio.Semaphore) -> None:
        try:
            reply: Reply | None = None
            with trio.move_on_after(REFRESH_DEADLINE):
                reply = await self._ask(request, 0)
            now = self.clock()
            stored = False
            if reply is not None:
                _, entry = self._prepare(request, reply, now)
                if entry is not None and not self._keep_old(old, entry.category, now):
                    self._put(request.key, entry, old)
                    stored = True
            if not stored and self._stale is not None:
                old.recheck_at = now + self._stale.failure_recheck
        finally:
            old.refreshing = False
            limiter.release()

    # -- Metrics --------------------------------------------------------------

    def _count(self, request: Request) -> _Counts:
        return self._count_for(request.route.server)

    def _count_for(self, server: str) -> _Counts:
        counts = self._counts.get(server)
        if counts is None:
            counts = self._counts[server] = _Counts()
        return counts

    def metrics(self) -> Iterable[Metric]:
        # Imported at scrape time: prometheus_client costs ~2 MB resident.
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["server", "zones", "view"]
        typed = ["server", "type", "zones", "view"]
        zones = self.zones_label
        entries = GaugeMetricFamily(
            "coredns_cache_entries", "The number of elements in the cache.", labels=typed
        )
        evictions = CounterMetricFamily(
            "coredns_cache_evictions", "The count of cache evictions.", labels=typed
        )
        for kind, shelf in (("success", self.success), ("denial", self.denial)):
            entries.add_metric([self.server_label, kind, zones, ""], len(shelf))
            evictions.add_metric([self.server_label, kind, zones, ""], shelf.evictions)
        hits = CounterMetricFamily("coredns_cache_hits", "The count of cache hits.", labels=typed)
        simple = {
            "requests": CounterMetricFamily(
                "coredns_cache_requests", "The count of cache requests.", labels=labels
            ),
            "misses": CounterMetricFamily(
                "coredns_cache_misses", "The count of cache misses.", labels=labels
            ),
            "prefetch": CounterMetricFamily(
                "coredns_cache_prefetch",
                "The number of times the cache has prefetched a cached item.",
                labels=labels,
            ),
            "drops": CounterMetricFamily(
                "coredns_cache_drops",
                "The number responses that are not cached, because the reply is malformed.",
                labels=labels,
            ),
            "served_stale": CounterMetricFamily(
                "coredns_cache_served_stale",
                "The number of requests served from stale cache entries.",
                labels=labels,
            ),
        }
        for server, counts in self._counts.items():
            hits.add_metric([server, "success", zones, ""], counts.hits_success)
            hits.add_metric([server, "denial", zones, ""], counts.hits_denial)
            for attr, family in simple.items():
                family.add_metric([server, zones, ""], getattr(counts, attr))
        return [entries, hits, *simple.values(), evictions]


def _rcode(reply: Reply) -> int:
    if isinstance(reply, dns.message.Message):
        return int(reply.rcode())
    return reply[3] & 0xF if len(reply) >= 4 else dns.rcode.SERVFAIL
