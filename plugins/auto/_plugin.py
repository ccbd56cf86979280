"""The auto plugin: every zone file of a directory served, rescanned every ``reload``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from pycorefile import Directive, Plugin, Request, Result, SetupContext
from pycorefile.files import file_stamps
from pycorefile.zones import match_zone
from pycorefile_plugins.file import ZoneFileError, ZoneSet, load_zone

from ._parse import AutoConfig, parse_auto
from ._walk import scan

log = logging.getLogger("pycorefile")


def _read(path: str, origin: str) -> tuple[object, object]:
    """The file's stamp and its zone (or the ZoneFileError), read in a worker thread."""
    stamp = file_stamps((path,))
    try:
        return stamp, load_zone(path, origin)
    except ZoneFileError as exc:
        return stamp, exc


class AutoPlugin(Plugin):
    """Serves the zones found in a directory, with *file*'s zone code.

    Every matching file is loaded; only names under the block's (or the
    directive's) zones are looked up, and a name under them that no loaded
    zone holds goes to the next plugin.
    """

    def __init__(self, config: AutoConfig) -> None:
        self.config = config
        self.zones = ZoneSet("auto")
        self.scans = 0

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> AutoPlugin:
        plugin = cls(parse_auto(directives, ctx))
        changes = ctx.data_changes
        plugin.zones.on_change = lambda origin: changes.announce(below=(origin,), source="auto")
        return plugin

    # -- Answering ------------------------------------------------------------------

    def serve_known(
        self, wire: bytes, key: bytes, name_end: int, edns: bool, do: bool, server: str
    ) -> bytes | None:
        return self.zones.known(wire, key, name_end, edns, do)

    def handle(self, request: Request) -> Result:
        known = self.zones.known_reply(request)
        if known is not None:
            return known
        name = request.name
        if match_zone(name, self.config.zones) is None:
            return self.next.handle(request)
        origin = self.zones.serves(name)
        if origin is None:
            return self.next.handle(request)
        return self.zones.handle(request, self.next, origin)

    # -- Scanning -------------------------------------------------------------------

    async def startup(self) -> None:
        await self.rescan()

    async def run(self) -> None:
        if self.config.reload <= 0:
            return
        while True:
            await trio.sleep(self.config.reload)
            await self.rescan()

    async def rescan(self) -> None:
        """Load new zone files, drop vanished ones, reload changed ones (new serial)."""
        try:
            found = await trio.to_thread.run_sync(scan, self.config, abandon_on_cancel=True)
        except Exception:
            log.exception("plugin/auto: scanning %s failed", self.config.directory)
            return
        self.scans += 1
        for origin in [o for o in self.zones.origins if o not in found]:
            self.zones.remove(origin)
            log.info("plugin/auto: Deleting zone %r", origin)
        for origin, path in found.items():
            source = self.zones.sources.get(origin)
            if source is not None:
                source.path = path
                await self.zones.reload(origin)
                continue
            stamp, loaded = await trio.to_thread.run_sync(
                _read, path, origin, abandon_on_cancel=True
            )
            if isinstance(loaded, ZoneFileError):
                log.warning("plugin/auto: Parse zone %r: %s", origin, loaded)
                continue
            self.zones.install(origin, loaded, path, stamp)  # type: ignore[arg-type]
            log.info("plugin/auto: Inserting zone %r from: %s", origin, path)
