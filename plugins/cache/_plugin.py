"""The cache plugin: CoreDNS's cache, answered from stored wire bytes.

A hit is a dictionary lookup on ``request.key`` plus ``PreparedReply.render``:
no dnspython; ``serve_known`` is the same hit read straight from the query's
bytes, for the server's fast path. ``handle`` states the ladder once: hit,
stale (answered now, or verified first), miss (the next plugin's reply,
stored when it comes, now or after a wait). Replies from the next plugin are
classified and prepared once, on the miss path. Refreshes (prefetch, stale
entries, and ``verify`` with a timeout) run in the plugin's background task,
fed through a bounded channel, so a hit never waits and a verification that
outlasts its timeout still refreshes the entry.

Each entry is stamped with the data-changes generation (``pycorefile.changes``)
current when its question was asked; a hit under another generation first
checks that no change of local data announced since (meshhosts loading a new
table) affects its name, else the entry is forgotten and the query is a miss.

The next plugin is asked with the AD bit set, as CoreDNS's cache asks, so an
entry records whether upstream validated the data whichever client asked
first; the AD bit is shown only to clients that set AD or DO (RFC 6840
section 5.7).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import trio

from pycorefile import (
    DataChanges,
    Directive,
    Pending,
    Plugin,
    PluginError,
    Reply,
    Request,
    Result,
    SetupContext,
    settle,
    then,
)
from pycorefile.wire import FLAG_AD, HEADER_LEN, MAX_TCP, name_to_text
from pycorefile.zones import in_zone

from ._classify import Category, classify, parse_reply, quick_classify, stored_form
from ._parse import CacheConfig, StaleSettings, parse_cache
from ._store import Entry, Shelf

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("pycorefile")

REFRESH_QUEUE = 256
"""Refreshes waiting for the background task; more are dropped (the old entry stays)."""
REFRESH_CONCURRENCY = 32
REFRESH_DEADLINE = 10.0
"""Seconds a background refresh may take before it counts as failed."""

_SUCCESS = Category.SUCCESS
_REFRESHING_RCODES = (dns.rcode.NOERROR, dns.rcode.NXDOMAIN)
"""RFC 8767 section 4: only these replace (or verify) an entry being refreshed."""


class _Refresh:
    """One queued refresh: a prefetch, a stale entry's, or a verification a query waits for."""

    __slots__ = ("answer", "done", "entry", "exclusive", "generation", "request")

    def __init__(
        self,
        request: Request,
        entry: Entry,
        exclusive: bool,
        done: trio.Event | None,
        generation: int,
    ) -> None:
        self.request = request
        self.generation = generation
        """The data-changes generation when the refresh was queued (stamps its entry)."""
        self.entry = entry
        self.exclusive = exclusive
        """True when this refresh holds ``entry.refreshing`` (one at a time per entry)."""
        self.done = done
        """Set when the refresh has finished, for a query waiting on it."""
        self.answer: Entry | Reply | None = None
        """What ``_refreshed`` made of the reply."""


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

    def __init__(
        self, config: CacheConfig, server_label: str = "", changes: DataChanges | None = None
    ) -> None:
        self.config = config
        self._changes = DataChanges() if changes is None else changes
        """Announcements of changed local data: an entry they affect is forgotten."""
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
        self._jobs, self._job_queue = trio.open_memory_channel[_Refresh](REFRESH_QUEUE)

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> CachePlugin:
        key = ctx.keys[0]
        host = ctx.listen_hosts[0] if ctx.listen_hosts else ""
        return cls(
            parse_cache(directives, ctx), f"{key.transport}://{host}:{key.port}", ctx.data_changes
        )

    # -- Answering ------------------------------------------------------------

    def handle(self, request: Request) -> Result:
        key = request.key
        entry = self._success_get(key) or self._denial_get(key)
        generation = self._changes.generation
        if entry is not None and entry.generation != generation and not self._current(key, entry):
            self._forget(key, entry)  # local data changed the answer: a miss
            entry = None
        if entry is not None:
            now = self.clock()
            if now < entry.expires:
                return self._hit(request, entry, now)
            stale = self._stale
            if stale is not None and now < entry.expires + stale.duration and entry.serves_stale:
                if not stale.verify or now < entry.recheck_at:
                    return self._serve_stale(request, entry, now)
                if stale.failure_recheck > 0 and entry.refreshing:
                    return self._serve_stale(request, entry, now, refresh=False)
                return Pending(self._verification(request, entry, stale))
        if request.qdcount != 1 or not self._in_zone(request):
            return self.next.handle(request)
        asked = request if request.flags & FLAG_AD else _asking(request, request.max_size)
        result = self.next.handle(asked)
        if not isinstance(result, Pending):
            return self._store(request, asked, result, entry, generation)
        # The miss is counted when the wait ends, however it ends: a wait that is
        # dropped before it starts (REFUSED over max_in_flight) asked nothing.
        request.answered_by = asked.answered_by
        return then(
            result,
            lambda reply: self._store(request, asked, reply, entry, generation),
            lambda exc: self._failed_miss(request, exc),
            lambda: self._count_miss(request),
        )

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
        if entry.generation != self._changes.generation and not self._current(key, entry):
            return None  # outdated by a change of local data: handle forgets it
        now = self.clock()
        if now >= entry.expires:
            return None
        counts = self._counts.get(server) or self._count_for(server)
        return self._answer(entry, now, counts, wire, name_end, edns, do)

    def _current(self, key: bytes, entry: Entry) -> bool:
        """False when a change of local data since ``entry`` was asked may have changed it;
        else the entry is stamped current (its next hit costs one comparison)."""
        changes = self._changes
        if changes.affects(name_to_text(key[:-6]), entry.generation):
            return False
        entry.generation = changes.generation
        return True

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

    async def _verification(self, request: Request, entry: Entry, stale: StaleSettings) -> Reply:
        """The reply to a query for an expired entry under ``serve_stale verify``.

        Everything happens once the query waits: a wait that is dropped before
        it starts has asked nothing and holds no entry.
        """
        return self._verified(request, entry, await self._verify(request, entry, stale))

    async def _verify(
        self, request: Request, entry: Entry, stale: StaleSettings
    ) -> Entry | Reply | None:
        """``serve_stale verify``: ask upstream about an expired entry (see ``_refreshed``).

        With a VERIFY_TIMEOUT the question is asked by the background task and
        this query waits at most that long: an answer that comes later still
        refreshes the entry, as in CoreDNS. With FAILURE_RECHECK, one
        verification per entry runs at a time; the queries that come meanwhile
        get the stale answer at once.
        """
        exclusive = stale.failure_recheck > 0
        if exclusive and entry.refreshing:
            return None
        if stale.verify_timeout <= 0:
            if exclusive:
                entry.refreshing = True
            generation = self._changes.generation
            try:
                reply = await self._ask(_asking(request, request.max_size))
            finally:
                if exclusive:
                    entry.refreshing = False
            return self._refreshed(request, reply, entry, generation)
        job = self._schedule(request, entry, exclusive=exclusive, waited=True)
        if job is None or job.done is None:
            return None  # too many refreshes queued: the upstream is not keeping up
        with trio.move_on_after(stale.verify_timeout):
            await job.done.wait()
        return job.answer

    def _verified(self, request: Request, entry: Entry, answer: Entry | Reply | None) -> Reply:
        """The reply to a query that verified the expired ``entry``: fresh, or stale."""
        if answer is None:
            return self._serve_stale(request, entry, self.clock(), refresh=False)
        counts = self._count(request)
        counts.requests += 1
        counts.misses += 1
        if isinstance(answer, Entry):
            return answer.view.render(request.wire, request.name_end, request.edns, request.do)
        return _for_client(request, answer)

    async def _ask(self, request: Request) -> Reply | None:
        """The rest of the chain's reply (waited for), or None when it failed."""
        try:
            return await settle(self.next.handle(request))
        except Exception as exc:
            _log_failed_refresh(request, exc)
        return None

    def _refreshed(
        self, request: Request, reply: Reply | None, old: Entry, generation: int
    ) -> Entry | Reply | None:
        """Take a refresh of ``old``'s question, with CoreDNS's rules for refreshing.

        Only a complete NOERROR or NXDOMAIN for the question asked counts
        (not truncated, signatures valid for a DO client): it is stored and
        returned (the new entry), or returned as a reply when it may not be
        stored. Anything else -- no reply, SERVFAIL, REFUSED, an unusable
        reply, or a denial of an answer under ``prefer_positive`` -- leaves
        ``old`` as it is, returns None, and holds refreshes off for
        FAILURE_RECHECK.
        """
        now = self.clock()
        if reply is not None:
            out, fresh, category = self._prepare(request, reply, now, generation)
            if (
                category is not None
                and category is not Category.UNUSABLE
                and _rcode(out) in _REFRESHING_RCODES
                and not self._keep_old(old, category, now)
            ):
                if fresh is None:
                    return out
                self._put(request.key, fresh, old)
                return fresh
        if self._stale is not None:
            old.recheck_at = now + self._stale.failure_recheck
        return None

    # -- Storing --------------------------------------------------------------

    def _store(
        self, request: Request, asked: Request, reply: Reply, old: Entry | None, generation: int
    ) -> Reply:
        """A miss's reply (to ``asked``, the copy with AD set): counted, stored if it may be.

        ``generation`` is the data-changes generation when it was asked.
        """
        self._count_miss(request)
        request.answered_by = asked.answered_by
        return self._settle(request, reply, self.clock(), old, generation)

    def _failed_miss(self, request: Request, exc: Exception) -> Reply:
        """A miss the rest of the chain failed after a wait: counted, never stored."""
        self._count_miss(request)
        raise exc

    def _settle(
        self, request: Request, reply: Reply, now: float, old: Entry | None, generation: int
    ) -> Reply:
        """Store a reply from the next plugin if it may be; return what to send."""
        out, entry, _ = self._prepare(request, reply, now, generation)
        if entry is None:
            if old is not None:
                self._forget(request.key, old)
            return _for_client(request, out)
        self._put(request.key, entry, old)
        # The first answer goes out exactly as later hits will: clamped TTLs, our OPT.
        return entry.view.render(request.wire, request.name_end, request.edns, request.do)

    def _prepare(
        self, request: Request, reply: Reply, now: float, generation: int
    ) -> tuple[Reply, Entry | None, Category | None]:
        """The reply to send (rendered once if it was a message), the entry to
        store (stamped with ``generation``, the data-changes generation when it
        was asked), and the reply's category (None: unreadable or another question)."""
        msg: dns.message.Message | None = None
        if isinstance(reply, dns.message.Message):
            msg = reply
            try:
                wire = reply.to_wire(max_size=MAX_TCP)
            except (dns.exception.DNSException, ValueError):
                return reply, None, None
            reply = wire
        else:
            wire = bytes(reply)
        if len(wire) < HEADER_LEN or request.qdcount != 1:
            return reply, None, None
        question_end = request.name_end + 4
        if wire[4:6] != b"\x00\x01" or wire[HEADER_LEN:question_end].lower() != request.key[:-2]:
            self._count(request).drops += 1
            return reply, None, None
        category = quick_classify(wire, request.qtype, question_end)
        if category is None:
            if msg is None:
                try:
                    msg = parse_reply(wire)
                except (dns.exception.DNSException, ValueError):
                    return reply, None, None
            category = classify(
                msg, msg.question[0].name, request.qtype, request.do, self.wall_clock()
            )
        if not category.stored or self._disabled(category, request):
            return reply, None, category
        config = self.config
        if category is Category.SERVFAIL and config.servfail_ttl <= 0:
            return reply, None, category
        settings = config.success if category is Category.SUCCESS else config.denial
        stored, duration, offsets = stored_form(wire, category, settings, config.servfail_ttl)
        if duration <= 0:
            return reply, None, category
        return reply, Entry(stored, category, now, duration, offsets, generation), category

    def _keep_old(self, old: Entry, category: Category, now: float) -> bool:
        """True when, under ``serve_stale_policy prefer_positive``, a refresh's
        reply that is not an answer (a denial, or a reply that may not be
        stored) must not replace the expired positive answer it refreshes."""
        stale = self._stale
        return (
            stale is not None
            and stale.prefer_positive
            and category is not Category.SUCCESS
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
        if entry.remaining(now) <= threshold and self._schedule(request, entry) is not None:
            counts.prefetch += 1

    def _schedule(
        self, request: Request, entry: Entry, exclusive: bool = True, waited: bool = False
    ) -> _Refresh | None:
        """Queue a refresh of ``entry``; None when not queued.

        An ``exclusive`` refresh is the only one of its entry in flight (a
        prefetch, a stale refresh); a ``waited`` one has an event a query waits on.
        """
        if exclusive and entry.refreshing:
            return None
        job = _Refresh(
            _asking(request, MAX_TCP),
            entry,
            exclusive,
            trio.Event() if waited else None,
            self._changes.generation,
        )
        try:
            self._jobs.send_nowait(job)
        except trio.WouldBlock:
            return None
        if exclusive:
            entry.refreshing = True
        return job

    async def run(self) -> None:
        """Run queued refreshes, a bounded number at a time."""
        limiter = trio.Semaphore(REFRESH_CONCURRENCY)
        async with trio.open_nursery() as nursery:
            async for job in self._job_queue:
                await limiter.acquire()
                nursery.start_soon(self._refresh, job, limiter)

    async def _refresh(self, job: _Refresh, limiter: trio.Semaphore) -> None:
        try:
            reply: Reply | None = None
            with trio.move_on_after(REFRESH_DEADLINE):
                reply = await self._ask(job.request)
            job.answer = self._refreshed(job.request, reply, job.entry, job.generation)
        finally:
            if job.exclusive:
                job.entry.refreshing = False
            limiter.release()
            if job.done is not None:
                job.done.set()

    # -- Metrics --------------------------------------------------------------

    def _count(self, request: Request) -> _Counts:
        return self._count_for(request.route.server)

    def _count_miss(self, request: Request) -> None:
        counts = self._count(request)
        counts.requests += 1
        counts.misses += 1

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


def _asking(request: Request, max_size: int) -> Request:
    """A copy of ``request`` with the AD bit set, for the next plugin (as CoreDNS's cache).

    A validating upstream then says whether the data is authenticated even
    when the client that filled the entry did not ask (RFC 6840 section 5.7),
    so a later client that sets AD gets it from the cache.
    """
    asked = request.flagged(FLAG_AD)
    asked.max_size = max_size
    return asked


def _for_client(request: Request, reply: Reply) -> Reply:
    """A reply that was not stored, as the client gets it: the AD bit only when it
    asked with AD or DO (stored replies get this from ``PreparedReply.render``)."""
    if request.do or request.flags & FLAG_AD:
        return reply
    if isinstance(reply, dns.message.Message):
        reply.flags &= ~dns.flags.AD
        return reply
    if len(reply) > 3 and reply[3] & FLAG_AD:
        return reply[:3] + bytes((reply[3] & ~FLAG_AD,)) + reply[4:]
    return reply


def _log_failed_refresh(request: Request, exc: Exception) -> None:
    """A refresh the next plugin failed: quiet for a PluginError (an upstream that
    is down, which the errors plugin reports), a warning for anything else."""
    if isinstance(exc, PluginError):
        log.debug("plugin/cache: refreshing %s failed: %s", request.name, exc)
    else:
        log.warning("plugin/cache: refreshing %s failed: %s", request.name, exc)


def _rcode(reply: Reply) -> int:
    if isinstance(reply, dns.message.Message):
        return int(reply.rcode())
    return reply[3] & 0xF if len(reply) >= 4 else dns.rcode.SERVFAIL
