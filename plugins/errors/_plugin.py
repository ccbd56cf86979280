"""The errors plugin: log what fails in the chain, CoreDNS's way, and answer SERVFAIL."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import dns.rcode
import trio

from pycorefile import Directive, Plugin, Reply, Request, SetupContext
from pycorefile._chain import plugin_of

from ._parse import Consolidate, ErrorsConfig, parse_errors

log = logging.getLogger("pycorefile")

SERVFAIL = dns.rcode.SERVFAIL


class _Window:
    """The errors one ``consolidate`` rule has counted since its window opened."""

    def __init__(self, rule: Consolidate) -> None:
        self.rule = rule
        self.count = 0
        self.opened = trio.Event()


def describe(exc: BaseException) -> str:
    """An exception as its error text: ``plugin/NAME: Type: message``."""
    where = f"plugin/{plugin_of(exc) or '?'}: {type(exc).__name__}"
    text = str(exc)
    return f"{where}: {text}" if text else where


class ErrorsPlugin(Plugin):
    """Catches exceptions from the plugins after it, logs them, and answers SERVFAIL.

    Each error is logged as ``[ERROR] plugin/errors: 2 NAME TYPE: plugin/P: ...``;
    errors matching a ``consolidate`` pattern are counted instead and reported
    once per period as ``N errors like 'REGEXP' occurred in last DURATION``.
    """

    def __init__(self, config: ErrorsConfig) -> None:
        self.config = config
        self._windows = [_Window(rule) for rule in config.consolidate]
        self._stopped = False

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> ErrorsPlugin:
        return cls(parse_errors(directives))

    # -- Serving ------------------------------------------------------------------------

    def serve_now(self, request: Request) -> Reply | None:
        try:
            return self.next.serve_now(request)
        except Exception as exc:
            return self.failed(request, exc)

    async def serve(self, request: Request) -> Reply:
        try:
            return await self.next.serve(request)
        except Exception as exc:
            return self.failed(request, exc)

    def failed(self, request: Request, exc: Exception) -> bytes:
        """Log (or count) the error; the reply is SERVFAIL, credited to the failing plugin."""
        if not request.answered_by:
            request.answered_by = plugin_of(exc)
        text = describe(exc)
        for window in self._windows:
            if window.rule.pattern.search(text) is None:
                continue
            if self._stopped:
                break
            window.count += 1
            if window.count == 1:
                window.opened.set()
                if window.rule.show_first:
                    self._log(window.rule.level, request, text, exc)
            return request.error(SERVFAIL)
        self._log(logging.ERROR, request, text, exc)
        return request.error(SERVFAIL)

    def _log(self, level: int, request: Request, text: str, exc: Exception) -> None:
        log.log(
            level,
            "plugin/errors: %d %s %s: %s",
            SERVFAIL,
            request.name,
            request.type_name,
            text,
            exc_info=exc if self.config.stacktrace else None,
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
            rule.pattern.pattern,
            rule.period_text,
        )

    async def shutdown(self) -> None:
        """Report what was counted so far, and log further errors one by one."""
        self._stopped = True
        for window in self._windows:
            self._report(window)
