"""The timeouts plugin: setup only; the server's TCP connections read what it sets."""

from __future__ import annotations

from collections.abc import Sequence

from pycorefile import Directive, Plugin, SetupContext
from pycorefile.plugin import TcpTimeouts

from ._parse import parse_timeouts


class TimeoutsPlugin(Plugin):
    """Sets the TCP read, write and idle timeouts of the block's listeners."""

    serves_queries = False
    repeatable = True

    def __init__(self, timeouts: TcpTimeouts) -> None:
        self.timeouts = timeouts

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> TimeoutsPlugin:
        timeouts = parse_timeouts(directives)
        ctx.tcp_timeouts = timeouts
        return cls(timeouts)
