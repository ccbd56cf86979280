"""The hosts plugin: serves the prepared table, re-reads the file when it changes."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

import dns.rcode
import trio

from pycorefile import DataChanges, Directive, Plugin, PluginError, Request, Result, SetupContext
from pycorefile.files import FileError, FileMissing, WatchedFiles, read_text
from pycorefile.zones import in_zone

from ._parse import MAX_FILE_SIZE, HostsConfig, HostsMap, parse_hosts, parse_hosts_text
from ._table import CLASS_IN, TYPE_A, TYPE_AAAA, TYPE_PTR, HostsTable, changed_names

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("pycorefile")


def read_hosts_file(
    path: str, origins: Sequence[str], reverse: bool, max_size: int = MAX_FILE_SIZE
) -> tuple[HostsMap, float]:
    """Read and parse a hosts file (blocking: run it in a worker thread).

    Returns the entries and the file's modification time; raises ``FileError``
    (``FileMissing`` when it is not there). Lines that do not parse are
    skipped, as CoreDNS does, so only a file that cannot be read fails.
    """
    # Lenient as CoreDNS: a stray Latin-1 byte in a comment must not lose the file.
    text = read_text(path, max_size, strict=False)
    try:
        mtime = os.stat(path).st_mtime
    except OSError:
        mtime = time.time()
    return parse_hosts_text(text.splitlines(), origins, reverse), mtime


@dataclass(frozen=True)
class Loaded:
    """What a (re)load made: the new table, and what it changes from the one serving."""

    table: HostsTable
    mtime: float
    """The file's modification time (``coredns_hosts_reload_timestamp_seconds``)."""
    names: frozenset[str]
    below: frozenset[str]


def load_table(
    config: HostsConfig, inline: HostsMap, old: HostsTable, max_size: int = MAX_FILE_SIZE
) -> Loaded:
    """Read the file, prepare the table of it and the inline entries, and compare it with
    ``old`` (blocking, CPU: run it in a worker thread). Raises ``FileError``."""
    entries, mtime = read_hosts_file(config.path, config.origins, config.reverse, max_size)
    table = HostsTable(entries, inline, config.ttl)
    names, below = changed_names(old, table)
    return Loaded(table, mtime, names, below)


@dataclass
class HostsMetrics:
    """CoreDNS's two hosts gauges, process-wide there: one per configuration here.

    ``coredns_hosts_entries{hostsfile}`` and
    ``coredns_hosts_reload_timestamp_seconds`` (the modification time of the
    file last read), written by every hosts plugin, shown once.
    """

    entries: dict[str, int] = field(default_factory=dict)
    reloaded: float | None = None
    shown_by: object = None

    def families(self) -> list[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        entries = GaugeMetricFamily(
            "coredns_hosts_entries",
            "The combined number of entries in hosts and Corefile.",
            labels=["hostsfile"],
        )
        for path, count in sorted(self.entries.items()):
            entries.add_metric([path], count)
        out: list[Metric] = [entries]
        if self.reloaded is not None:
            stamp = GaugeMetricFamily(
                "coredns_hosts_reload_timestamp_seconds",
                "The timestamp of the last reload of hosts file.",
            )
            stamp.add_metric([], self.reloaded)
            out.append(stamp)
        return out


class HostsPlugin(Plugin):
    """Answers A, AAAA and PTR from a hosts file and inline lines, as CoreDNS's hosts.

    The table (``HostsTable``) is rebuilt off the event loop when the file
    changes and replaces ``_table`` in one assignment: a query sees the old
    table or the new one. A file that cannot be read keeps the last good table.
    """

    max_file_size = MAX_FILE_SIZE
    """A bigger hosts file is refused (a failed load: the last good table keeps serving)."""

    def __init__(
        self,
        config: HostsConfig,
        metrics: HostsMetrics | None = None,
        changes: DataChanges | None = None,
    ) -> None:
        self.config = config
        self._inline = parse_hosts_text(config.inline, config.origins, config.reverse)
        self._table = HostsTable(HostsMap(), self._inline, config.ttl)
        self._watch = WatchedFiles([config.path])
        self._changes = DataChanges() if changes is None else changes
        self._metrics = metrics if metrics is not None else HostsMetrics()
        if self._metrics.shown_by is None:
            self._metrics.shown_by = self
        self.loads = 0
        self.load_failures = 0
        self._origins = config.origins
        self._fall = config.fallthrough

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> HostsPlugin:
        config = parse_hosts(directives, ctx)
        metrics = ctx.shared.setdefault("hosts.metrics", HostsMetrics())
        assert isinstance(metrics, HostsMetrics)
        return cls(config, metrics, ctx.data_changes)

    # -- Answering ------------------------------------------------------------------

    def serve_known(
        self, wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
    ) -> bytes | None:
        # The server's fast path: an A/AAAA question of a name the table has exactly.
        found = self._table.answers.get(key[:-2])
        if found is None:
            return None
        return found.render(wire, name_end, edns, do)

    def handle(self, request: Request) -> Result:
        if request.qclass != CLASS_IN:
            return self.next.handle(request)  # the table holds class IN data only
        table = self._table
        question = request.key[:-2]
        if request.qtype == TYPE_PTR:
            # PTR is answered for any name, in the zones or not; a miss always goes on.
            found = table.ptr.get(question)
            if found is None:
                return self.next.handle(request)
            return found.render(request.wire, request.name_end, request.edns, request.do)
        name = request.name
        if not any(in_zone(name, origin) for origin in self._origins):
            return self.next.handle(request)
        fall = self._fall
        qtype = request.qtype
        if (
            self.config.fallthrough_unsupported
            and qtype not in (TYPE_A, TYPE_AAAA)
            and fall is not None
            and fall.through(name)
        ):
            return self.next.handle(request)
        found = table.lookup(question, qtype)
        if found is not None:
            return found.render(request.wire, request.name_end, request.edns, request.do)
        if fall is not None and fall.through(name):
            return self.next.handle(request)
        # CoreDNS returns SERVFAIL unwritten here (no SOA to make an NXDOMAIN with).
        raise PluginError(f"hosts: no entry for {name}", dns.rcode.SERVFAIL)

    # -- Loading --------------------------------------------------------------------

    async def startup(self) -> None:
        """Read the file once before serving; a missing or broken file only logs."""
        await self._load(starting=True)

    async def run(self) -> None:
        """Every ``reload`` interval, re-read the file when its stamp changed."""
        interval = self.config.reload
        if interval <= 0:
            return
        while True:
            await trio.sleep(interval)
            await self.check()

    async def check(self) -> bool:
        """One round of the reload loop: re-read the file if it changed; True when reloaded."""
        if not await self._watch.changed():
            return False
        return await self._load()

    async def _load(self, *, starting: bool = False) -> bool:
        """Read the file and swap the new table in, in a worker thread; on any error keep
        the table serving (logged; a missing file only warns)."""
        config = self.config
        try:
            loaded = await self._watch.read(
                partial(load_table, config, self._inline, self._table, self.max_file_size)
            )
        except Exception as exc:
            self.load_failures += 1
            if isinstance(exc, FileMissing):
                # CoreDNS warns at setup and keeps what it has: a missing file is no error.
                if starting or self.loads:
                    log.warning("plugin/hosts: File does not exist: %s", config.path)
            elif isinstance(exc, FileError):
                log.error("plugin/hosts: %s; the last good table keeps serving", exc)
            else:
                log.exception(
                    "plugin/hosts: reading %s failed; the last good table keeps serving",
                    config.path,
                )
            return False
        # The swap and its announcement in one step: the next query sees both.
        self._table = loaded.table
        self.announce_reload(loaded.names, loaded.below)
        self.loads += 1
        self._metrics.entries[config.path] = loaded.table.entries
        self._metrics.reloaded = loaded.mtime
        log.debug("plugin/hosts: parsed %s into %d entries", config.path, loaded.table.entries)
        return True

    def announce_reload(self, names: frozenset[str], below: frozenset[str]) -> None:
        """Tell whatever remembers answers (a cache in front) which names the new table
        answers differently: the next query for them is answered from the new table."""
        self._changes.announce(names, below=below, source="hosts")

    # -- State ----------------------------------------------------------------------

    @property
    def table(self) -> HostsTable:
        """The table serving now."""
        return self._table

    def metrics(self) -> Iterable[Metric]:
        if self._metrics.shown_by is not self:
            return ()
        return self._metrics.families()
