"""The autoalloc plugin: gives meshhosts an allocator, keeps its state on disk, shows the table."""

from __future__ import annotations

import contextlib
import copy
import ipaddress
import json
import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import trio

from pycorefile import CorefileError, Directive, Plugin, SetupContext, SetupError
from pycorefile.http import HttpRequest, HttpResponse

from ._allocator import Allocator, HostEntry, Outcome, Pair
from ._parse import AutoAllocConfig, parse_autoalloc
from ._state import Loaded, StateError, encode, file_signature, load, locked, write

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("pycorefile")

Signature = tuple[int, int, int] | None
"""A state file's (inode, size, mtime), or None when it is missing."""

PATH = "/allocations"
RETRY_INTERVAL = 2.0
"""Seconds between attempts to write a state that could not be written (disk full...)."""
SHUTDOWN_WRITE_WAIT = 5.0
"""Seconds a shutdown waits for the last write of a state still only in memory."""
MISSING_MESHHOSTS = "autoalloc needs meshhosts in the same server block"
CONTROL_PLANE = "control-plane"
"""Status of a table row whose pair the control plane allocated (ServiceEntry status)."""
_DETAIL_LIMIT = 10
"""Up to this many hosts per round are logged one by one; more are summarised."""


class AllocationService:
    """One allocator and its state file, shared by successive configurations of a process.

    A reload builds new plugin instances; they take over the running
    configuration's service instead of rereading the file, so nothing
    allocated in memory is lost (with or without a state file).
    Other processes (``-workers``) share the file under a lock and pick up
    each other's writes before allocating.

    Everything that touches the file (the lock, reads, writes and fsyncs) runs
    in worker threads: ``allocate`` and ``retry`` are called through
    ``trio.to_thread``. Two locks keep the event loop from ever waiting on the
    disk or on another process: ``file_lock`` serialises the rounds and the
    retries of this process (each holds the file lock while it reads, allocates
    and writes); ``lock`` guards the allocator in memory and is held only for
    memory work, so ``table`` and ``counts`` (called on the event loop) never
    wait for a write or for another process's lock.
    """

    def __init__(self, config: AutoAllocConfig) -> None:
        self.config = config
        self.allocator = Allocator(config.pool, hold=config.hold, scheme=config.scheme)
        self.lock = threading.RLock()
        self.file_lock = threading.Lock()
        self.dirty = False
        """The state in memory is newer than the file (a write failed or is due)."""
        self.failing = False
        self.write_failures = 0
        self.exhausted_total = 0
        self.moved_total = 0
        self.disk_generation = 0
        self.signature: Signature = None
        self.retired = False
        """Superseded by a reload on the same file: allocate in memory only, write nothing."""
        if config.state is not None:
            self._load(config.state)

    def _load(self, path: str) -> None:
        loaded = load(path)  # StateError propagates: the caller refuses to start
        self.signature = file_signature(path)
        if loaded is None:
            return
        _log_unused_copies(loaded)
        dropped = self.allocator.adopt(loaded.state)
        for record in dropped:
            log.warning(
                "plugin/autoalloc: %s had %s and %s, outside the configured prefixes %s and %s; "
                "it gets a new pair",
                record.host,
                record.ipv4,
                record.ipv6,
                self.config.pool.ipv4,
                self.config.pool.ipv6,
            )
        self.disk_generation = loaded.state.generation
        # Rewrite both copies once running if one was damaged or records were dropped.
        self.dirty = bool(loaded.problems or dropped)

    # -- Allocation ----------------------------------------------------------------------

    def allocate(self, entries: Iterable[HostEntry], explicit: Iterable[str]) -> dict[str, Pair]:
        """One round: assign, persist (before anyone answers with the result), report.

        Blocks (file lock, read, write, fsync): call it from a worker thread.
        """
        path = None if self.retired else self.config.state
        with self.file_lock, locked(path) if path else contextlib.nullcontext(True):
            self._refresh()
            with self.lock:
                outcome = self.allocator.allocate(entries, explicit)
                if outcome.changed:
                    self.allocator.state.generation += 1
                    self.dirty = path is not None
            self._report(outcome)
            if self.dirty and path is not None:
                self._persist()
        return outcome.assigned

    def retry(self) -> None:
        """Write a state that is still only in memory (called periodically, in a worker thread)."""
        path = self.config.state
        if path is None or not self.dirty or self.retired:
            return
        with self.file_lock, locked(path):
            self._refresh()
            if self.dirty:
                self._persist()

    def _refresh(self) -> None:
        """Take in what another process wrote to the shared file since we last looked.

        The file is read without ``lock``; only taking its content in holds it.
        """
        path = self.config.state
        if path is None or self.retired:
            return
        signature = file_signature(path)
        if signature == self.signature:
            return
        try:
            loaded = load(path)
        except StateError as exc:
            log.error(
                "plugin/autoalloc: state file changed and no copy is usable (%s); keeping the "
                "allocations in memory and writing them again",
                exc,
            )
            self.dirty = True
            return
        with self.lock:
            self._take_in(loaded, signature, path)

    def _take_in(self, loaded: Loaded | None, signature: Signature, path: str) -> None:
        """Merge a state read from the shared file into ours (under ``lock``)."""
        self.signature = signature
        damaged = loaded is not None and _log_unused_copies(loaded)
        if loaded is None or loaded.state.generation <= self.disk_generation:
            if loaded is not None or self.allocator.state.records:
                if not damaged:
                    log.warning(
                        "plugin/autoalloc: state file %s was deleted or replaced by an older "
                        "copy while running; writing the current allocations again",
                        path,
                    )
                self.dirty = True
            return
        theirs = loaded.state
        mine = self.allocator.state
        if self.dirty:
            taken = {a for r in theirs.records.values() for a in (r.ipv4, r.ipv6)}
            for host, record in mine.records.items():
                if host in theirs.records:
                    continue
                if record.ipv4 in taken or record.ipv6 in taken:
                    log.warning(
                        "plugin/autoalloc: unsaved pair of %s conflicts with the state file; "
                        "the file wins",
                        host,
                    )
                    continue
                theirs.records[host] = record
        theirs.generation = max(theirs.generation, mine.generation)
        owners, unallocated, rounds = (
            self.allocator.owners,
            self.allocator.unallocated,
            self.allocator.rounds,
        )
        self.allocator.adopt(theirs)
        self.allocator.owners, self.allocator.unallocated = owners, unallocated
        self.allocator.rounds = rounds
        self.disk_generation = loaded.state.generation
        self.dirty = self.dirty or damaged

    def _persist(self) -> None:
        """Write both copies of the state; the writing holds ``file_lock``, not ``lock``."""
        path = self.config.state
        if path is None:
            self.dirty = False
            return
        with self.lock:
            state = self.allocator.state
            data = encode(state, self.config.pool)
            generation = state.generation
        try:
            write(path, data)
        except OSError as exc:
            self.write_failures += 1
            self.dirty = True
            if not self.failing:
                log.error(
                    "plugin/autoalloc: cannot write state file %s (%s); serving the table "
                    "in memory and retrying every %gs",
                    path,
                    exc.strerror or exc,
                    RETRY_INTERVAL,
                )
            self.failing = True
            return
        self.dirty = False
        self.disk_generation = generation
        self.signature = file_signature(path)
        if self.failing:
            log.info("plugin/autoalloc: state file %s written again", path)
            self.failing = False

    def _report(self, out: Outcome) -> None:
        for record, reason in out.moved:
            self.moved_total += 1
            log.warning(
                "plugin/autoalloc: %s gives up %s and %s: %s",
                record.host,
                record.ipv4,
                record.ipv6,
                reason,
            )
        for record in out.reclaimed:
            log.info(
                "plugin/autoalloc: the reservation of departed host %s (%s, %s) goes to a new host",
                record.host,
                record.ipv4,
                record.ipv6,
            )
        _log_hosts(
            "assigned",
            [f"{r.host} ({r.namespace}/{r.entry}) {r.ipv4} {r.ipv6}" for r in out.new],
        )
        _log_hosts("departed, pair kept reserved", [r.host for r in out.departed])
        _log_hosts("returned to its reserved pair", [r.host for r in out.returned])
        if out.exhausted:
            self.exhausted_total += len(out.exhausted)
            names = ", ".join(o.host for o in out.exhausted[:_DETAIL_LIMIT])
            more = len(out.exhausted) - _DETAIL_LIMIT
            log.warning(
                "plugin/autoalloc: prefixes %s and %s are exhausted: "
                "%d host(s) get no address: %s%s",
                self.config.pool.ipv4,
                self.config.pool.ipv6,
                len(out.exhausted),
                names,
                f" and {more} more" if more > 0 else "",
            )

    def table(self, include_all: bool = False) -> list[dict[str, str]]:
        """The current table (taken under the lock: meshhosts may allocate from a thread)."""
        with self.lock:
            return self.allocator.table(include_all)

    def counts(self) -> tuple[int, int, int]:
        with self.lock:
            return self.allocator.counts()

    def dry_run(self, entries: Iterable[HostEntry], explicit: Iterable[str]) -> Allocator:
        """What the next round would give, computed on a copy (nothing is written)."""
        with self.lock:
            clone = Allocator(
                self.config.pool,
                hold=self.allocator.hold,
                scheme=self.allocator.scheme,
                state=copy.deepcopy(self.allocator.state),
            )
        clone.allocate(entries, explicit)
        return clone


def _address_order(row: dict[str, str]) -> tuple[int, int, str]:
    """Rows with an IPv4 address first, by address; the others (unallocated) after."""
    try:
        return (0, int(ipaddress.ip_address(row["ipv4"])), row["host"])
    except ValueError:
        return (1, 0, row["host"])


def _log_unused_copies(loaded: Loaded) -> bool:
    """Log each state copy that could not be used; True if there was one (both are rewritten)."""
    for problem in loaded.problems:
        log.warning(
            "plugin/autoalloc: state copy not used: %s; using %s (both copies are written again)",
            problem,
            loaded.source,
        )
    return bool(loaded.problems)


def _log_hosts(what: str, items: list[str]) -> None:
    if not items:
        return
    if len(items) <= _DETAIL_LIMIT:
        for item in items:
            log.info("plugin/autoalloc: %s: %s", what, item)
    else:
        log.info("plugin/autoalloc: %s: %d hosts (%s, ...)", what, len(items), items[0])


_SHARED_PATHS = "autoalloc.state_paths"


def _running_plugins(ctx: SetupContext) -> list[AutoAllocPlugin]:
    """On reload, the autoalloc plugins of the configuration still serving."""
    runner = ctx.shared.get("runner")
    running = getattr(getattr(runner, "server", None), "config", None)
    find = getattr(running, "find", None)
    if find is None:
        return []
    return [p for p in find("autoalloc") if isinstance(p, AutoAllocPlugin)]


def _service(
    config: AutoAllocConfig, ctx: SetupContext, directive: Directive
) -> tuple[AllocationService, AllocationService | None]:
    """The service for this block, and a running one it replaces on the same file, if any.

    On reload the running configuration's service is taken over when it is
    the same one (same state file, or same block without one; same prefixes),
    so nothing is reread and nothing allocated in memory is lost. A new
    service whose state file does not exist yet starts from the allocations
    the block already serves (``state`` added, or moved to a new file).
    """
    state_option = next((o for o in directive.block or () if o.name == "state"), directive)
    if config.state is not None:
        paths = ctx.shared.setdefault(_SHARED_PATHS, set())
        if config.state in paths:
            raise SetupError(
                f"state file {config.state} is already used by another autoalloc block",
                state_option,
                0,
            )
        paths.add(config.state)
    keys = tuple(str(k) for k in ctx.keys)
    running = _running_plugins(ctx)
    for plugin in running:
        old = plugin.service.config
        same_place = old.state == config.state and (config.state is not None or plugin.keys == keys)
        if same_place and old.pool == config.pool:
            plugin.service.allocator.hold = config.hold
            plugin.service.allocator.scheme = config.scheme
            return plugin.service, None
    try:
        service = AllocationService(config)
    except StateError as exc:
        raise SetupError(
            f"state file {config.state} cannot be used: {exc}. Refusing to start so that no "
            "address in use goes to another host: restore a copy from a backup, or delete "
            "both copies to start afresh (hosts may then get other addresses)",
            state_option,
            0,
        ) from None
    same_block = next((p for p in running if p.keys == keys), None)
    if same_block is not None and not service.allocator.state.records:
        with same_block.service.lock:
            inherited = copy.deepcopy(same_block.service.allocator.state)
        inherited.generation = 0
        service.allocator.adopt(inherited)
        service.dirty = config.state is not None
    replaced = next(
        (p.service for p in running if config.state and p.service.config.state == config.state),
        None,
    )
    return service, replaced


class AutoAllocPlugin(Plugin):
    """Hands meshhosts a stable address pair for each ServiceEntry host that has none.

    Not in the query path: meshhosts answers A, AAAA and PTR for the
    allocated addresses from its own table, with its TTL and flags.
    """

    serves_queries = False

    def __init__(
        self,
        config: AutoAllocConfig,
        service: AllocationService,
        ctx: SetupContext,
        directive: Directive,
    ) -> None:
        self.config = config
        self.directive = directive
        self.service = service
        self.ctx = ctx
        self.keys = tuple(str(k) for k in ctx.keys)
        self.started = False
        self.replaced: AllocationService | None = None
        """A running service on the same state file this one supersedes (prefixes changed)."""
        host = ctx.listen_hosts[0] if ctx.listen_hosts else ""
        first = ctx.keys[0]
        self.server = f"{first.transport}://{host}:{first.port}"

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> AutoAllocPlugin:
        directive = directives[0]
        config = parse_autoalloc(directives)
        if not any(d.name == "meshhosts" for d in ctx.block.directives):
            raise SetupError(MISSING_MESHHOSTS, directive)
        service, replaced = _service(config, ctx, directive)
        plugin = cls(config, service, ctx, directive)
        plugin.replaced = replaced
        ctx.http_route(config.http, PATH, plugin.handle_http)
        return plugin

    # -- Lifecycle --------------------------------------------------------------------

    def _meshhosts(self) -> Any:
        mesh = self.ctx.plugin("meshhosts")
        if mesh is None:
            raise RuntimeError(MISSING_MESHHOSTS)
        return mesh

    async def startup(self) -> None:
        mesh = self._meshhosts()
        use_allocator: Callable[[Any], None] | None = getattr(mesh, "use_allocator", None)
        if use_allocator is None:
            raise RuntimeError("meshhosts offers no allocator hook (use_allocator)")
        self.started = True
        if self.replaced is not None:
            self.replaced.retired = True  # the old configuration must not write our file now
        if self.service.dirty:
            await trio.to_thread.run_sync(self.service.retry, abandon_on_cancel=True)
        use_allocator(self.allocate)

    async def run(self) -> None:
        while True:
            await trio.sleep(RETRY_INTERVAL)
            if self.service.dirty:
                # Abandoned if cancelled while another process holds the file lock: the
                # thread still writes when it gets the lock, and the copies stay whole.
                await trio.to_thread.run_sync(self.service.retry, abandon_on_cancel=True)

    async def shutdown(self) -> None:
        if not self.started:
            return
        self.started = False
        if self.service.dirty:
            # The last write, waited for a while (another process may hold the file lock).
            with trio.move_on_after(SHUTDOWN_WRITE_WAIT):
                await trio.to_thread.run_sync(self.service.retry, abandon_on_cancel=True)

    # -- What meshhosts calls ---------------------------------------------------------

    def allocate(self, candidates: Sequence[HostEntry]) -> dict[str, Pair]:
        """Host → (IPv4, IPv6) for the ServiceEntry hosts of the table being built.

        Blocks until the state file is locked, read and written (meshhosts calls
        it from a worker thread, before building the table it answers from).
        """
        return self.service.allocate(candidates, self._explicit())

    def _explicit(self) -> set[str]:
        mesh = self.ctx.plugin("meshhosts")
        explicit = getattr(mesh, "explicit_addresses", None)
        return set(explicit()) if callable(explicit) else set()

    # -- Visibility -------------------------------------------------------------------

    def allocation_table(self) -> list[dict[str, str]]:
        """The table: as served once running; before that, what the manifests and state give.

        Works without starting the server (``pycorefile -allocations``): it
        reads the manifests through meshhosts and the state file, allocates on
        a copy, and writes nothing.
        """
        if self.service.allocator.rounds:
            return self._with_control_plane(self.service.table())
        mesh = self._meshhosts()
        try:
            entries: list[HostEntry] = list(mesh.service_entry_hosts())
        except ValueError as exc:  # meshhosts' SourceError: file, line and reason
            d = self.directive
            raise CorefileError(
                f"plugin/autoalloc: cannot read the manifests: {exc}", d.file, d.line, d.column
            ) from None
        return self._with_control_plane(self.service.dry_run(entries, self._explicit()).table())

    def _with_control_plane(self, rows: list[dict[str, str]]) -> list[dict[str, str]]:
        """Our rows and the control plane's (``status: control-plane``), by address.

        The data plane reading the table then knows every virtual address DNS
        answers, whoever allocated it.
        """
        rows_of = getattr(self.ctx.plugin("meshhosts"), "control_plane_allocations", None)
        theirs = rows_of() if callable(rows_of) else []
        if not theirs:
            return rows
        marked = [{**row, "status": CONTROL_PLANE} for row in theirs]
        return sorted([*rows, *marked], key=_address_order)

    async def handle_http(self, request: HttpRequest) -> HttpResponse:
        """``GET /allocations`` (``?all=1`` adds reservations and hosts without a pair)."""
        include_all = request.query.get("all", ["0"])[-1] not in ("", "0", "false")
        rows = self._with_control_plane(self.service.table(include_all=include_all))
        body = (json.dumps(rows, indent=1) + "\n").encode()
        return HttpResponse(200, body, "application/json")

    def metrics(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        service = self.service
        present, reserved, unallocated = service.counts()
        labels = ["server"]
        gauges = [
            ("coredns_autoalloc_allocations", "Hosts that hold an address pair.", present),
            (
                "coredns_autoalloc_reserved",
                "Address pairs kept reserved for hosts that left the manifests.",
                reserved,
            ),
            (
                "coredns_autoalloc_unallocated",
                "Hosts that qualify but got no address: the prefix is exhausted.",
                unallocated,
            ),
            (
                "coredns_autoalloc_capacity",
                "Address pairs the prefixes hold.",
                service.config.pool.capacity,
            ),
        ]
        for name, doc, value in gauges:
            family = GaugeMetricFamily(name, doc, labels=labels)
            family.add_metric([self.server], value)
            yield family
        counters = [
            (
                "coredns_autoalloc_exhausted",
                "Allocations refused because the prefix was exhausted.",
                service.exhausted_total,
            ),
            (
                "coredns_autoalloc_moved",
                "Pairs given up because the manifests claimed one of their addresses.",
                service.moved_total,
            ),
            (
                "coredns_autoalloc_state_write_failures",
                "Failed attempts to write the state file.",
                service.write_failures,
            ),
        ]
        for name, doc, value in counters:
            counter = CounterMetricFamily(name, doc, labels=labels)
            counter.add_metric([self.server], value)
            yield counter
