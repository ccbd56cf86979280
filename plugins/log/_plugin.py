"""The log plugin: one Common Log Format line per query, cache hits included."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from time import perf_counter

import dns.rcode

from pycorefile import Directive, PluginError, Reply, Request, SetupContext, Wrapper
from pycorefile.response import reply_class, typify
from pycorefile.zones import in_zone

from ._format import Render, compile_format
from ._parse import LogRule, parse_log
from ._writer import MAX_LINES, LineWriter

WRITER_KEY = "log.writer"
"""Where the configuration's shared ``LineWriter`` lives in ``SetupContext.shared``."""


@dataclass(frozen=True)
class _Compiled:
    zone: str
    render: Render
    classes: frozenset[str] | None
    """None means every class (``all``): no need to classify the reply."""


class LogPlugin(Wrapper):
    """Wraps the rest of the chain, renders the final reply and logs it.

    It sits outermost but for *errors*, so it sees every reply the chain gives,
    cache hits included, whether the rest answered at once or after a wait
    (``on_reply``). It renders the reply to wire bytes itself (rcode, flags
    and size are read from them) and returns those bytes, which the server
    then only measures. A failure (``on_error``) is logged with the rcode the
    client gets, a wait cancelled before its end (``on_cancel``) as SERVFAIL.
    """

    repeatable = True

    def __init__(self, rules: Sequence[LogRule], writer: LineWriter) -> None:
        self.rules = tuple(rules)
        self.writer = writer
        self._lines = writer.lines
        self._compiled = tuple(
            _Compiled(
                rule.zone,
                compile_format(rule.format).render,
                None if "all" in rule.classes else rule.classes,
            )
            for rule in self.rules
        )
        first = self._compiled[0] if self._compiled else None
        self._catch_all = first if first is not None and first.zone == "." else None

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> LogPlugin:
        rules = parse_log(directives)
        writer = ctx.shared.get(WRITER_KEY)
        if not isinstance(writer, LineWriter):
            writer = ctx.shared[WRITER_KEY] = LineWriter()
        return cls(rules, writer)

    # -- Serving ------------------------------------------------------------------------

    def _rule(self, request: Request) -> _Compiled | None:
        """The first rule whose name scope holds the question name."""
        if self._catch_all is not None:
            return self._catch_all
        name = request.name
        for rule in self._compiled:
            if in_zone(name, rule.zone):
                return rule
        return None

    def on_reply(self, request: Request, reply: Reply) -> Reply:
        """Log the reply as it will be sent, and return those bytes (now or after a wait)."""
        # The hot path of every cache hit with log on: kept free of needless calls.
        rule = self._catch_all
        if rule is None:
            rule = self._rule(request)
            if rule is None:
                return reply
        if type(reply) is bytes and len(reply) <= request.max_size:
            wire = reply
        else:
            rendered = self._render(rule, request, reply)
            if rendered is None:
                return reply
            wire = rendered
        if rule.classes is None:
            lines = self._lines
            lines.append(rule.render(request, wire, perf_counter() - request.started))
            if len(lines) == 1 or len(lines) >= MAX_LINES:
                self.writer.added()
        else:
            self._emit(rule, request, wire)
        return wire

    def on_error(self, request: Request, exc: Exception) -> Reply:
        """A plugin failed: logged with the rcode the client gets (PluginError's, or SERVFAIL)."""
        self._failed(request, exc.rcode if isinstance(exc, PluginError) else dns.rcode.SERVFAIL)
        raise exc

    def on_cancel(self, request: Request) -> None:
        """The query was cancelled while it waited (its time ran out): logged as SERVFAIL."""
        self._failed(request, dns.rcode.SERVFAIL)

    def _failed(self, request: Request, rcode: int) -> None:
        rule = self._rule(request)
        if rule is not None:
            self._emit(rule, request, request.error(rcode))

    def _render(self, rule: _Compiled, request: Request, reply: Reply) -> bytes | None:
        """The reply as it will be sent; None (logged as SERVFAIL) when it cannot be rendered.

        The server then renders it again, fails the same way, and says why.
        """
        try:
            return request.to_wire(reply)
        except Exception:
            self._emit(rule, request, request.error(dns.rcode.SERVFAIL))
            return None

    def _emit(self, rule: _Compiled, request: Request, wire: bytes) -> None:
        if rule.classes is not None and reply_class(typify(wire)) not in rule.classes:
            return
        self.writer.write(rule.render(request, wire, perf_counter() - request.started))

    # -- Lifecycle ----------------------------------------------------------------------

    async def run(self) -> None:
        await self.writer.run()

    async def before_stop(self) -> None:
        self.writer.flush()

    async def shutdown(self) -> None:
        self.writer.flush()
