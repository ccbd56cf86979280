"""The reload plugin: reload the Corefile when it changes, as CoreDNS's *reload*."""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from pycorefile import Directive, Plugin, SetupContext, SetupError, check_args, parse_duration
from pycorefile.corefile import CorefileError, ServerBlock
from pycorefile.plugin import Reloader

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("pycorefile")

DEFAULT_INTERVAL = 30.0
DEFAULT_JITTER = 15.0
MIN_INTERVAL = 2.0
MIN_JITTER = 1.0
ACTIVE_KEY = "reload.active"
"""The one reload plugin of a configuration that watches (the first one set up)."""


@dataclass(frozen=True)
class ReloadConfig:
    interval: float = DEFAULT_INTERVAL
    jitter: float = DEFAULT_JITTER
    """Each check waits ``interval`` plus a random part of ``[-jitter/2, +jitter/2)``."""


def parse_reload(directives: Sequence[Directive]) -> ReloadConfig:
    """``reload [INTERVAL] [JITTER]``, with CoreDNS's limits."""
    d = directives[0]
    check_args(d, 0, 2)
    for option in d.block or ():
        raise SetupError(f"unknown property '{option.name}'", option)
    interval = parse_duration(d.args[0], d, 0) if d.args else DEFAULT_INTERVAL
    if interval < MIN_INTERVAL:
        raise SetupError("interval value must be greater or equal to 2s", d, 0)
    jitter = parse_duration(d.args[1], d, 1) if len(d.args) > 1 else DEFAULT_JITTER
    if 0 < jitter < MIN_JITTER:
        raise SetupError("jitter value must be greater or equal to 1s", d, 1)
    return ReloadConfig(interval, min(jitter, interval / 2))


def blocks_digest(blocks: Iterable[ServerBlock]) -> str:
    """SHA512 of what the Corefile says, imports expanded: comment, whitespace and
    line-position edits do not count as changes (CoreDNS hashes the parsed form too)."""

    def directive(d: Directive) -> list[Any]:
        return [d.name, list(d.args), None if d.block is None else [directive(x) for x in d.block]]

    canonical = [[list(b.keys), [directive(d) for d in b.directives]] for b in blocks]
    text = json.dumps(canonical, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha512(text.encode()).hexdigest()


def corefile_digest(reloader: Reloader) -> str:
    """The digest of the Corefile as it is on disk now (reads and parses it: blocking).

    When it does not parse, the digest of its bytes stands in, so a broken
    edit is still a change: the reload is tried, fails, and is counted.
    """
    try:
        return blocks_digest(reloader.read_corefile())
    except (CorefileError, OSError, ValueError):
        return "unparsed:" + files_checksum(reloader)


def files_checksum(reloader: Reloader) -> str:
    """The checksum of the bytes of the Corefile and its imports (reads them: blocking)."""
    digest = hashlib.sha512()
    for path in reloader.files():
        try:
            with open(path, "rb") as f:
                digest.update(f.read())
        except OSError:
            digest.update(b"\0missing\0" + path.encode())
    return digest.hexdigest()


class ReloadPlugin(Plugin):
    """Checks the Corefile every interval (± jitter) and reloads it when it changed.

    The runner builds and validates the new configuration completely before
    swapping it in; when that fails the old configuration keeps serving, the
    error is logged and ``coredns_reload_failed_total`` grows.
    """

    serves_queries = False

    def __init__(
        self, config: ReloadConfig, reloader: Reloader | None, active: bool, digest: str = ""
    ) -> None:
        self.config = config
        self.reloader = reloader
        self.active = active
        jitter = config.jitter
        self.period = config.interval + (random.uniform(-jitter / 2, jitter / 2) if jitter else 0)
        self.digest = digest
        """What the configuration this plugin belongs to was built from."""
        self._seen = self.digest
        self._bytes_seen = ""
        """The checksum of the files' bytes when ``_seen`` was computed: parsing (in a
        child process) is needed only once the bytes change."""

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> ReloadPlugin:
        config = parse_reload(directives)
        reloader = ctx.reloader
        active = ACTIVE_KEY not in ctx.shared
        ctx.shared[ACTIVE_KEY] = True
        digest = ""
        if reloader is not None and active:
            # The blocks this configuration is being built from: no second parse.
            digest = blocks_digest(ctx.blocks) if ctx.blocks else corefile_digest(reloader)
        return cls(config, reloader, active, digest)

    async def run(self) -> None:
        reloader = self.reloader
        if reloader is None or not self.active:
            return
        log.info("plugin/reload: Running configuration SHA512 = %s", self.digest)
        while True:
            await trio.sleep(self.period)
            if not reloader.serves(self):
                return  # a newer configuration serves: its own reload plugin watches now
            # Reading the files and parsing (a child process) block: off the event loop.
            raw = await trio.to_thread.run_sync(files_checksum, reloader)
            if raw == self._bytes_seen:
                continue
            self._bytes_seen = raw
            digest = await trio.to_thread.run_sync(corefile_digest, reloader)
            if digest == self._seen:
                continue
            self._seen = digest
            if digest == self.digest:
                continue  # edited back to what is serving: nothing to do
            try:
                reloaded = await reloader.reload(
                    "plugin/reload: Corefile changed but reload failed"
                )
            except Exception:
                # A bug, not a bad Corefile: keep serving and keep watching.
                log.exception("plugin/reload: reload failed")
                continue
            if reloaded:
                return

    def metrics(self) -> Iterable[Metric]:
        from prometheus_client.core import GaugeMetricFamily  # at scrape time (~2 MB)

        if not self.active or not self.digest:
            return
        family = GaugeMetricFamily(
            "coredns_reload_version_info",
            "A metric with a constant '1' value labeled by hash, and value which type of hash "
            "generated.",
            labels=["hash", "value"],
        )
        family.add_metric(["sha512", self.digest], 1)
        yield family
