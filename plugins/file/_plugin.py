"""The file plugin: zones read from zone files at setup, reloaded on a new SOA serial."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from pycorefile import Directive, Plugin, Request, Result, SetupContext, SetupError
from pycorefile.files import file_stamps

from ._parse import FileConfig, ZoneFile, parse_file
from ._serve import ZoneSet
from ._zone import ZoneFileError, ZoneFileUnreadable, parse_zone, read_zone_file

log = logging.getLogger("pycorefile")


class FilePlugin(Plugin):
    """Answers authoritatively for the zones of its ``file`` lines."""

    repeatable = True

    def __init__(self, config: FileConfig, zones: ZoneSet) -> None:
        self.config = config
        self.zones = zones

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> FilePlugin:
        config = parse_file(directives, ctx)
        zones = ZoneSet("file", config.fallthrough)
        for entry in config.files:
            _load_at_setup(entry, zones)
        changes = ctx.data_changes
        zones.on_change = lambda origin: changes.announce(below=(origin,), source="file")
        return cls(config, zones)

    # -- Answering ------------------------------------------------------------------

    def serve_known(
        self, wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
    ) -> bytes | None:
        return self.zones.known(wire, key, name_end, edns, do)

    def handle(self, request: Request) -> Result:
        known = self.zones.known_reply(request)
        if known is not None:
            return known
        origin = self.zones.serves(request.name)
        if origin is None:
            return self.next.handle(request)
        return self.zones.handle(request, self.next, origin)

    # -- Reloading ------------------------------------------------------------------

    async def run(self) -> None:
        """Look at each file every ``reload`` interval (none with ``reload 0``)."""
        async with trio.open_nursery() as nursery:
            for entry in self.config.files:
                if entry.reload > 0:
                    nursery.start_soon(self._watch, entry)

    async def _watch(self, entry: ZoneFile) -> None:
        while True:
            await trio.sleep(entry.reload)
            for origin in entry.origins:
                await self.zones.reload(origin, entry.reload_by_mtime)


def _load_at_setup(entry: ZoneFile, zones: ZoneSet) -> None:
    """Read the file once and parse it for each origin; an unusable file is a setup error.

    As CoreDNS: a file that cannot be opened is fatal only with ``reload 0``;
    otherwise it is logged and its zones answer SERVFAIL until it loads.
    """
    stamp = file_stamps((entry.path,))
    try:
        text = read_zone_file(entry.path)
    except ZoneFileUnreadable as exc:
        if entry.reload == 0:
            raise SetupError(str(exc), entry.directive, 0) from None
        log.warning("plugin/file: %s: trying again in %ss", exc, entry.reload)
        for origin in entry.origins:
            zones.install(origin, None, entry.path, None)
        return
    for origin in entry.origins:
        try:
            zone = parse_zone(text, origin, entry.path)
        except ZoneFileError as exc:
            raise SetupError(str(exc), entry.directive, 0) from None
        zones.install(origin, zone, entry.path, stamp)
