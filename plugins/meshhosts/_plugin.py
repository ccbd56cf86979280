"""The meshhosts plugin: serves the prepared table, reloads it, feeds autopath and autoalloc."""

from __future__ import annotations

import contextlib
import gc
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING

import trio

from pycorefile import DataChanges, Directive, Plugin, Request, Result, SetupContext, then
from pycorefile.files import WatchedFiles

from ._answers import Chase, PreparedTable, Settings, changed_names
from ._kube import KubeSource
from ._parse import MeshHostsConfig, parse_meshhosts
from ._sources import (
    MAX_FILE_SIZE,
    SOURCE_SUFFIXES,
    ServiceEntryHost,
    SourceError,
    SourceMissing,
    Sources,
    read_search_domains,
    read_sources,
)
from ._table import (
    MeshTable,
    build_table,
    client_namespaces,
    control_plane_rows,
    explicit_addresses,
    host_key,
    service_entry_hosts,
)

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("pycorefile")

Allocator = Callable[[list[ServiceEntryHost]], Mapping[str, tuple[str, str]]]
"""What autoalloc registers: ServiceEntry hosts without address → host → (IPv4, IPv6).
Called in a worker thread: it may block."""

_gc_lock = threading.Lock()
_gc_pauses = 0


@contextlib.contextmanager
def _cyclic_gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector off while a table is built.

    Building creates hundreds of thousands of long-lived objects; the
    collector would rescan them again and again, doubling the build time.
    Reference counting still frees everything that is not a cycle. Nested
    and concurrent pauses (two blocks reloading at once) are counted.
    """
    global _gc_pauses
    with _gc_lock:
        if _gc_pauses == 0 and not gc.isenabled():
            paused = False
        else:
            paused = True
            _gc_pauses += 1
            gc.disable()
    try:
        yield
    finally:
        if paused:
            with _gc_lock:
                _gc_pauses -= 1
                if _gc_pauses == 0:
                    gc.enable()


def load_sources(files: Sequence[str], max_size: int = MAX_FILE_SIZE) -> Sources:
    """Read every source file (``read_sources`` with the collector paused); SourceError."""
    with _cyclic_gc_paused():
        return read_sources(files, max_size)


KUBE_SETTLE = 0.1
"""Seconds the API's changes are gathered before a table is built from them."""


def union(*parts: Sources | None) -> Sources:
    """The records of several sources together (the API's first, then the files')."""
    out = Sources()
    for part in parts:
        if part is not None:
            out.extend(part)
    return out


def prepare_table(
    sources: Sources,
    config: MeshHostsConfig,
    allocations: Mapping[str, tuple[str, str]],
    api: Sources | None = None,
) -> PreparedTable:
    """What a (re)load computes: merge the sources, prepare every answer (CPU only).

    ``api`` is what the ``kubernetes`` source holds: its hosts are built on their
    own, then the files' and inline lines' hosts are laid over them, so a file
    adds hosts or replaces the API's entry for a host it names.
    """
    with _cyclic_gc_paused():
        table = build_table(
            sources,
            config.inline,
            domain=config.domain,
            namespace=config.namespace,
            allocations=allocations,
        )
        if api is not None:
            from_api = build_table(
                api, domain=config.domain, namespace=config.namespace, allocations=allocations
            )
            table = MeshTable(
                {**from_api.entries, **table.entries}, {**from_api.allocated, **table.allocated}
            )
        settings = Settings(
            zones=config.zones,
            ttl=config.ttl,
            domain=config.domain,
            namespace=config.namespace,
            fallthrough=config.fallthrough,
            serial=int(time.time()),
        )
        return PreparedTable(table, settings)


class MeshHostsPlugin(Plugin):
    """Answers the mesh's names from a table built from NameTables, manifests and inline lines.

    The table is a ``PreparedTable`` (answers as wire bytes keyed on the
    question); a reload builds a new one off the query path and replaces the
    ``_table`` attribute in one assignment, so a query sees the old table or
    the new one, never a mix, and announces in the same step which names the
    new table answers differently (``SetupContext.data_changes``), so that
    the cache and autopath in front of it forget those answers.
    """

    def __init__(
        self, config: MeshHostsConfig, server_label: str = "", changes: DataChanges | None = None
    ) -> None:
        self.config = config
        self._changes = DataChanges() if changes is None else changes
        self.server_label = server_label
        self.zones_label = ",".join(config.zones)
        self._sources: Sources | None = None
        """What the files hold (the last good read)."""
        self._all: Sources | None = None
        """Every source of the serving table: the API's records and the files'."""
        self._kube: KubeSource | None = None
        self._kube_dirty = False
        self._explicit: set[str] = {entry.address for entry in config.inline}
        self._allocator: Allocator | None = None
        self._allocations: dict[str, tuple[str, str]] = {}
        """What the allocator gave for the serving table (kept if it fails next time)."""
        self._table = self._prepare(Sources(), {})
        self._loaded = False
        self._rebuild = False
        self._files = WatchedFiles(config.files, SOURCE_SUFFIXES)
        self._wake: trio.Event | None = None
        self._search: list[str] | None = None
        self._client_namespaces: dict[str, str] = {}
        """Pod address → namespace (``namespace @client``), from the serving sources."""
        self._client_paths: dict[str, tuple[str, ...]] = {}
        """Namespace → its search path, made once each (``namespace @client``)."""
        self._resolv_stamp: tuple[int, int] | None = None
        self.loads = 0
        self.load_failures = 0
        self.loaded_at = 0.0

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> MeshHostsPlugin:
        config = parse_meshhosts(directives, ctx)
        key = ctx.keys[0]
        host = ctx.listen_hosts[0] if ctx.listen_hosts else ""
        # Only a block that places each client offers a per-client search path: autopath
        # takes any plugin with ``search_path_for`` as one (``ClientSearchPath``).
        made = ClientNamespaceMeshHosts if config.client_namespace else cls
        return made(config, f"{key.transport}://{host}:{key.port}", ctx.data_changes)

    # -- Answering ------------------------------------------------------------------

    def serve_known(
        self, wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
    ) -> bytes | None:
        # The server's fast path: a name in the table (the key less its DO and CD bits).
        found = self._table.answers.get(key[:-2])
        return None if found is None else found.render(wire, name_end, edns, do)

    def handle(self, request: Request) -> Result:
        found = self._table.lookup(request)
        if found is None:
            return self.next.handle(request)
        if isinstance(found, Chase):
            # An ExternalName outside the table: our CNAMEs in front of the next plugin's answer.
            target = self.next.handle(request.derive(found.target))
            return then(target, partial(found.merge, request))
        return found.render(request.wire, request.name_end, request.edns, request.do)

    # -- Loading --------------------------------------------------------------------

    def _prepare(
        self,
        sources: Sources,
        allocations: Mapping[str, tuple[str, str]],
        api: Sources | None = None,
    ) -> PreparedTable:
        return prepare_table(sources, self.config, allocations, api)

    def _prepare_change(
        self,
        sources: Sources,
        allocations: Mapping[str, tuple[str, str]],
        old: PreparedTable,
        api: Sources | None = None,
    ) -> tuple[PreparedTable, frozenset[str], frozenset[str]]:
        """The new table, and what it changes from ``old`` (``changed_names``).

        ``api`` is what the ``kubernetes`` source holds (see ``prepare_table``).
        """
        table = self._prepare(sources, allocations, api)
        with _cyclic_gc_paused():
            names, below = changed_names(
                old.hosts, table.hosts, self.config.domain, self.config.namespace
            )
        return table, names, below

    async def startup(self) -> None:
        """Load the files; a file that is there but cannot be used stops the start.

        The error (``FILE:LINE: reason``) then reaches the user as ``cannot
        start: plugin/meshhosts: ...`` (exit 1), or, on a Corefile reload,
        leaves the running configuration serving. A file that is not there
        yet (the table not written yet) only keeps the plugin not ready.
        """
        self._wake = trio.Event()
        if self.config.kubernetes is not None:
            await self._start_kube()
        if not self.config.files:
            await self._install(Sources())
            return
        await self._load(starting=True)

    async def _start_kube(self) -> None:
        """Subscribe to the API's watches; wait for their first LIST, ``startup_timeout`` at most.

        Not synced by then: the table starts from the files and inline lines, the
        plugin reports not ready, and the API's objects come in with the next build.
        """
        assert self.config.kubernetes is not None
        self._kube = KubeSource(self.config.kubernetes, self._kube_changed)
        self._kube.start()
        with trio.move_on_after(self.config.startup_timeout):
            while not self._kube.synced():
                await trio.sleep(0.05)
        if not self._kube.synced():
            log.warning(
                "plugin/meshhosts: the Kubernetes API has not been listed after %gs; starting "
                "without it (not ready until it is)",
                self.config.startup_timeout,
            )

    def _kube_changed(self) -> None:
        """A watch changed something: build a new table soon (changes are gathered)."""
        if not self._kube_dirty:
            self._kube_dirty = True
            if self._wake is not None:
                self._wake.set()

    async def shutdown(self) -> None:
        if self._kube is not None:
            self._kube.close()

    async def _load(self, *, starting: bool = False) -> bool:
        """Read every file and install the new table; on error keep the current one.

        Whatever goes wrong reading the files is a failed load: logged,
        counted, and the table serving stays (raised instead when
        ``starting``, unless a file is only missing).
        """
        files = self.config.files
        try:
            # In a worker thread, abandoned on cancel (shutdown, a retired configuration):
            # a slow parse of a big file then finishes in the background and is dropped.
            sources = await self._files.read(
                partial(load_sources, files, self.config.max_file_size)
            )
        except SourceError as exc:
            self.load_failures += 1
            if starting and not isinstance(exc, SourceMissing):
                raise
            if self._loaded:
                log.error("plugin/meshhosts: %s; the last good table keeps serving", exc)
            else:
                log.error(
                    "plugin/meshhosts: %s; not ready until the files load (inline entries "
                    "are served meanwhile)",
                    exc,
                )
            return False
        except Exception:
            # read_sources raises only SourceError: this is a bug, but still no reason
            # to lose the table or the process.
            self.load_failures += 1
            log.exception("plugin/meshhosts: reading %s failed unexpectedly", " ".join(files))
            if starting:
                raise
            return False
        return await self._install(sources)

    async def _install(self, sources: Sources) -> bool:
        """Allocate, build off the event loop, swap in (``sources``: the files' records)."""
        self._sources = sources
        self._kube_dirty = False  # a change from now on asks for another build
        api = self._kube.sources() if self._kube is not None else None
        combined = union(api, sources) if api is not None else sources
        self._all = combined
        self._explicit = explicit_addresses(combined, self.config.inline)
        # The allocator may block (autoalloc locks and writes its state file): in a thread.
        allocations = await trio.to_thread.run_sync(
            self._allocate, combined, abandon_on_cancel=True
        )
        old = self._table
        try:
            table, names, below = await trio.to_thread.run_sync(
                self._prepare_change, sources, allocations, old, api
            )
        except Exception:
            self.load_failures += 1
            log.exception("plugin/meshhosts: building the table failed; keeping the last one")
            return False
        if self._table is not old:  # another build swapped in meanwhile: changed against that
            names, below = frozenset(), frozenset((".",))
        # The swap and its announcement in one step: the next query sees both.
        self._table = table
        if self.config.client_namespace:
            self._client_namespaces = client_namespaces(combined)
        self._changes.announce(names, below=below, source=self.name or "meshhosts")
        self._allocations = allocations
        self._loaded = True
        self._rebuild = False
        self.loads += 1
        self.loaded_at = time.time()
        log.debug("plugin/meshhosts: %d hosts loaded (%s)", table.entries, self.config.source)
        return True

    def _allocate(self, sources: Sources) -> dict[str, tuple[str, str]]:
        """Ask the allocator for the ServiceEntry hosts without address.

        When it fails, the pairs of the serving table are used again: a
        failing allocator must not take the addresses of names in use away.
        """
        allocator = self._allocator
        if allocator is None:
            return {}
        try:
            result = allocator(service_entry_hosts(sources))
        except Exception:
            log.exception(
                "plugin/meshhosts: the allocator failed; building with the allocations "
                "served so far"
            )
            return dict(self._allocations)
        out: dict[str, tuple[str, str]] = {}
        for host, pair in result.items():
            try:
                v4, v6 = (str(ipaddress.ip_address(a)) if a else "" for a in pair)
            except (TypeError, ValueError):
                log.warning("plugin/meshhosts: allocator gave %s an unusable pair %r", host, pair)
                continue
            out[host_key(host)] = (v4, v6)
        return out

    async def run(self) -> None:
        """Check the files every ``reload`` interval (or when woken) and reload on change."""
        if self._wake is None:
            self._wake = trio.Event()
        interval = self.config.reload
        while True:
            wake = self._wake
            if interval > 0:
                with trio.move_on_after(interval):
                    await wake.wait()
            else:
                await wake.wait()
            if wake.is_set():
                self._wake = trio.Event()
            await self.check()

    async def check(self) -> None:
        """One round of the reload loop: resolv.conf, then the files, then a pending rebuild."""
        await trio.to_thread.run_sync(self._refresh_search)
        files = self.config.files
        if files and await self._files.changed():
            await self._load()
            return
        if self._kube_dirty:
            await trio.sleep(KUBE_SETTLE)  # let a burst of watch events land in one build
        if self._rebuild or self._kube_dirty:
            await self._install(self._sources if files and self._sources else Sources())

    # -- For other plugins ----------------------------------------------------------

    def use_allocator(self, allocator: Allocator) -> None:
        """autoalloc's hook: called before each table build with the hosts lacking addresses,
        in a worker thread (it may block on its state file)."""
        self._allocator = allocator
        if self._loaded:
            self._rebuild = True
            if self._wake is not None:
                self._wake.set()

    def explicit_addresses(self) -> set[str]:
        """Every address the sources name explicitly (never to be allocated)."""
        if self._all is not None:
            return set(self._explicit)
        if self._sources is None and self.config.files:
            try:
                self._sources = read_sources(self.config.files, self.config.max_file_size)
            except SourceError as exc:
                log.error("plugin/meshhosts: %s", exc)
                return set(self._explicit)
            self._explicit = explicit_addresses(self._sources, self.config.inline)
        return set(self._explicit)

    def service_entry_hosts(self) -> list[ServiceEntryHost]:
        """The ServiceEntry hosts without address, read now if no table was loaded yet.

        Raises SourceError when the files cannot be read.
        """
        if self._all is not None:
            return service_entry_hosts(self._all)
        if self._sources is None:
            files = self.config.files
            self._sources = read_sources(files, self.config.max_file_size) if files else Sources()
            self._explicit = explicit_addresses(self._sources, self.config.inline)
        return service_entry_hosts(self._sources)

    def control_plane_allocations(self) -> list[dict[str, str]]:
        """Addresses the control plane allocated (ServiceEntry ``status.addresses``), one row
        per entry and host (``host, namespace, entry, ipv4, ipv6``), from the serving sources."""
        sources = self._all if self._all is not None else self._sources
        return control_plane_rows(sources) if sources is not None else []

    def search_path(self) -> list[str]:
        """``NAMESPACE.svc.DOMAIN``, ``svc.DOMAIN``, ``DOMAIN``, then resolv.conf's search list.

        The same list object is returned until it changes (autopath relies on it).
        """
        if self._search is None:
            self._refresh_search()
        assert self._search is not None
        return self._search

    def _refresh_search(self) -> None:
        path = self.config.resolv_conf
        try:
            st = os.stat(path)
            stamp: tuple[int, int] | None = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if self._search is not None and stamp == self._resolv_stamp:
            return
        domain = self.config.domain
        base = [f"svc.{domain}", domain]
        if self.config.namespace:
            base.insert(0, f"{self.config.namespace}.svc.{domain}")
        search = list(dict.fromkeys(base + read_search_domains(path)))
        self._resolv_stamp = stamp
        if search != self._search:
            self._search = search
            self._client_paths = {}

    # -- State ----------------------------------------------------------------------

    def ready(self) -> bool:
        """The files loaded and, with the ``kubernetes`` source, every kind listed once (an
        API outage after that keeps the last table and the plugin ready)."""
        return self._loaded and (self._kube is None or self._kube.synced())

    @property
    def table(self) -> PreparedTable:
        """The table serving now."""
        return self._table

    def metrics(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        labels = ["server", "zones"]
        values = [self.server_label, self.zones_label]
        entries = GaugeMetricFamily(
            "coredns_meshhosts_entries", "Hosts in the mesh table.", labels=labels
        )
        entries.add_metric(values, self._table.entries)
        reloads = CounterMetricFamily(
            "coredns_meshhosts_reloads",
            "Tables loaded from the files (the first load included).",
            labels=labels,
        )
        reloads.add_metric(values, self.loads)
        failures = CounterMetricFamily(
            "coredns_meshhosts_reload_failures",
            "Loads that failed (broken, unreadable or missing file); the last table kept serving.",
            labels=labels,
        )
        failures.add_metric(values, self.load_failures)
        stamp = GaugeMetricFamily(
            "coredns_meshhosts_reload_timestamp_seconds",
            "When the serving table was loaded (Unix time).",
            labels=labels,
        )
        stamp.add_metric(values, self.loaded_at)
        return [entries, reloads, failures, stamp]


class ClientNamespaceMeshHosts(MeshHostsPlugin):
    """*meshhosts* with ``namespace @client`` (a node-local server): each client's search path
    is that of its pod's namespace, offered to autopath per client (``ClientSearchPath``).

    A separate class because autopath asks a plugin that has ``search_path_for`` for
    every client's path rather than for ``search_path()``: a sidecar's block (one
    namespace for every client) must not have it.
    """

    def search_path_for(self, request: Request) -> Sequence[str] | None:
        """The search path of the client that sent ``request`` (``autopath @meshhosts``):
        ``NS.svc.DOMAIN``, ``svc.DOMAIN``, ``DOMAIN`` and resolv.conf's search domains,
        NS being the namespace of the pod that has the client's address; None (no
        autopath) when no pod, or pods of two namespaces, have it. A dictionary lookup
        per query (and one tuple per namespace, made once)."""
        namespace = self._client_namespaces.get(request.client[0])
        if namespace is None:
            return None
        path = self._client_paths.get(namespace)
        if path is None:
            domain = self.config.domain
            head = (f"{namespace}.svc.{domain}", f"svc.{domain}", domain)
            path = tuple(dict.fromkeys((*head, *self.search_path())))
            self._client_paths[namespace] = path
        return path
