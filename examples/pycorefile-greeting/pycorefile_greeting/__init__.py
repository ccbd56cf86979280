"""greeting: answers TXT queries for configured names with a message.

A complete third-party plugin in one file: a pure parse function, a plugin
class whose ``handle`` answers from memory and passes everything else on, and
its place in the chain (after ``cache``, so its answers are cached like any
other). For a plugin that changes what the rest of the chain answers, see the
``rename`` example.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import dns.rdatatype
import dns.rrset

from pycorefile import (
    Directive,
    Plugin,
    Reply,
    Request,
    Result,
    SetupContext,
    SetupError,
    check_args,
)


@dataclass(frozen=True)
class GreetingConfig:
    """What the Corefile said: the message and the names that get it."""

    message: str
    names: frozenset[str]
    ttl: int = 60


def parse_greeting(directives: Sequence[Directive], zones: Sequence[str]) -> GreetingConfig:
    """``greeting MESSAGE [NAMES...] { ttl SECONDS }``; names default to the block's zones."""
    directive = directives[0]
    check_args(directive, 1)
    message, *names = directive.args
    ttl = 60
    for option in directive.block or ():
        if option.name != "ttl":
            raise SetupError(f"unknown property '{option.name}'", option)
        check_args(option, 1, 1)
        if not option.args[0].isdigit():
            raise SetupError(f"ttl must be a number of seconds, not {option.args[0]!r}", option, 0)
        ttl = int(option.args[0])
    wanted = [n.lower().rstrip(".") + "." for n in names] or list(zones)
    return GreetingConfig(message, frozenset(wanted), ttl)


class GreetingPlugin(Plugin):
    """Answers ``TXT`` for its names; passes every other query to the next plugin."""

    after = "cache"  # runs inside cache, so its answers are cached

    def __init__(self, config: GreetingConfig) -> None:
        self.config = config

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> GreetingPlugin:
        return cls(parse_greeting(directives, ctx.zones))

    def _answer(self, request: Request) -> Reply | None:
        if request.qtype != dns.rdatatype.TXT or request.name not in self.config.names:
            return None
        reply = request.reply(authoritative=True)
        text = '"' + self.config.message.replace('"', '\\"') + '"'
        reply.answer.append(dns.rrset.from_text(request.qname, self.config.ttl, "IN", "TXT", text))
        return reply

    def handle(self, request: Request) -> Result:
        reply = self._answer(request)
        if reply is None:
            return self.next.handle(request)  # not ours: whatever the rest gives, as is
        return reply
