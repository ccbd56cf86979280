"""Small plugins that exercise the serving core from real sockets."""

from __future__ import annotations

from collections.abc import Sequence

import dns.rdatatype
import dns.rrset
import trio

from plugins.bind import BindPlugin
from plugins.whoami import WhoamiPlugin
from pycorefile import Directive, Plugin, Reply, Request, SetupContext
from pycorefile._registry import Registry


class BigTxtPlugin(Plugin):
    """Answers TXT with N strings of 200 bytes, N from the first label (``n40.big.``)."""

    after = "cache"

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> BigTxtPlugin:
        return cls()

    def serve_now(self, request: Request) -> Reply | None:
        count = int(request.name.split(".")[0][1:])
        reply = request.reply(authoritative=True)
        rdatas = [f'"{i:03d}{"x" * 197}"' for i in range(count)]
        reply.answer.append(
            dns.rrset.from_text(request.qname, 60, "IN", dns.rdatatype.TXT, *rdatas)
        )
        return reply

    async def serve(self, request: Request) -> Reply:
        reply = self.serve_now(request)
        assert reply is not None
        return reply


class SlowPlugin(Plugin):
    """Waits the milliseconds named by the first label (``ms300.slow.``), then answers."""

    after = "cache"

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> SlowPlugin:
        return cls()

    async def serve(self, request: Request) -> Reply:
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

    def serve_now(self, request: Request) -> Reply | None:
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
