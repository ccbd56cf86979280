"""Small plugins that exercise the serving core from real sockets."""

from __future__ import annotations

from collections.abc import Sequence

import dns.rdatatype
import dns.rrset
import trio

from pycorefile import Directive, Pending, Plugin, Reply, Request, Result, SetupContext
from pycorefile._registry import Registry
from pycorefile_plugins.bind import BindPlugin
from pycorefile_plugins.whoami import WhoamiPlugin


class BigTxtPlugin(Plugin):
    """Answers TXT with N strings of 200 bytes, N from the first label (``n40.big.``)."""

    after = "cache"

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> BigTxtPlugin:
        return cls()

    def handle(self, request: Request) -> Result:
        count = int(request.name.split(".")[0][1:])
        reply = request.reply(authoritative=True)
        rdatas = [f'"{i:03d}{"x" * 197}"' for i in range(count)]
        reply.answer.append(
            dns.rrset.from_text(request.qname, 60, "IN", dns.rdatatype.TXT, *rdatas)
        )
        return reply


class SlowPlugin(Plugin):
    """Waits the milliseconds named by the first label (``ms300.slow.``), then answers."""

    after = "cache"

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> SlowPlugin:
        return cls()

    def handle(self, request: Request) -> Result:
        return Pending(self._later(request))

    async def _later(self, request: Request) -> Reply:
        await trio.sleep(int(request.name.split(".")[0][2:]) / 1000)
        reply = request.reply()
        reply.answer.append(dns.rrset.from_text(request.qname, 5, "IN", "A", "192.0.2.7"))
        return reply


class FailingPlugin(Plugin):
    """Raises on every query, with and without waiting."""

    after = "cache"

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> FailingPlugin:
        return cls()

    def handle(self, request: Request) -> Result:
        raise RuntimeError("boom")


def registry() -> Registry:
    """bind, whoami and the plugins above, as a server would find them."""
    return Registry.from_classes(
        {
            "bind": BindPlugin,
            "whoami": WhoamiPlugin,
            "bigtxt": BigTxtPlugin,
            "slow": SlowPlugin,
            "failing": FailingPlugin,
        }
    )
