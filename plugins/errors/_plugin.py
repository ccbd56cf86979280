"""The errors plugin: log the errors plugins return, CoreDNS's way, with consolidation."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import trio

from pycorefile import Directive, PluginError, Reply, Request, SetupContext, Wrapper
from pycorefile.plugin import with_stacktrace

from ._parse import Consolidate, ErrorsConfig, parse_errors

log = logging.getLogger("pycorefile")


class _Window:
    """The errors one ``consolidate`` rule has counted since its window opened."""

    def __init__(self, rule: Consolidate) -> None:
        self.rule = rule
        self.count = 0
        self.opened = trio.Event()


class ErrorsPlugin(Wrapper):
    """Logs the errors (``PluginError``) of the plugins after it, as CoreDNS does.

    Each error is logged as ``[ERROR] plugin/errors: RCODE NAME TYPE: MESSAGE``
    and passed on: the server answers its rcode. Errors matching a
    ``consolidate`` pattern are counted instead and reported once per period
    as ``N errors like 'REGEXP' occurred in last DURATION``. Any other
    exception is a panic: it is not ours to log, and goes on to the server,
    which logs and counts it (with the traceback under ``stacktrace``).

    A wrapper with ``on_error`` only: transparent on success, so a block it
    heads keeps the server's known-answer path (cache hits with no Request).
    """

    def __init__(self, config: ErrorsConfig) -> None:
        self.config = config
        self._windows = [_Window(rule) for rule in config.consolidate]
        self._stopped = False

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> ErrorsPlugin:
        return cls(parse_errors(directives))

    # -- Serving ------------------------------------------------------------------------

    def on_error(self, request: Request, exc: Exception) -> Reply:
        """An error is logged (or counted) and goes on; a panic goes on to the server."""
        if isinstance(exc, PluginError):
            self.failed(request, exc)
        elif self.config.stacktrace:
            with_stacktrace(exc)
        raise exc

    def failed(self, request: Request, exc: PluginError) -> None:
        """Log the error, or count it in the first ``consolidate`` window it matches."""
        text = exc.message
        for window in self._windows:
            if window.rule.pattern.search(text) is None:
                continue
            if self._stopped:
                break
            window.count += 1
            if window.count == 1:
                window.opened.set()
                if window.rule.show_first:
                    self._log(window.rule.level, request, exc)
            return
        self._log(logging.ERROR, request, exc)

    def _log(self, level: int, request: Request, exc: PluginError) -> None:
        log.log(
            level,
            "plugin/errors: %d %s %s: %s",
            exc.rcode,
            request.name,
            request.type_name,
            exc.message,
        )

    # -- Consolidation ------------------------------------------------------------------

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for window in self._windows:
                nursery.start_soon(self._summarize, window)

    async def _summarize(self, window: _Window) -> None:
        """A window opens at the first matching error and is reported ``period`` later."""
        while True:
            await window.opened.wait()
            await trio.sleep(window.rule.period)
            self._report(window)

    def _report(self, window: _Window) -> None:
        count, window.count = window.count, 0
        window.opened = trio.Event()
        rule = window.rule
        if count == 0 or (rule.show_first and count == 1):
            return
        log.log(
            rule.level,
            "plugin/errors: %d errors like '%s' occurred in last %s",
            count,
            rule.regexp or rule.pattern.pattern,
            rule.period_text,
        )

    async def shutdown(self) -> None:
        """Report what was counted so far, and log further errors one by one."""
        self._stopped = True
        for window in self._windows:
            self._report(window)
