"""The bufsize plugin: a setting of its server block, applied by the server.

CoreDNS's *bufsize* sits near the front of the chain (plugin.cfg position 14,
before everything that reads a query's EDNS record) and lowers a larger EDNS
payload in the query to its SIZE. Here the server does that for the block
before any plugin runs (``Request.limit_payload``), which is the same for
every plugin, and it also caps the block's UDP replies to SIZE instead of the
server's 1232 bytes. A cache hit on the server's fast path is sized the same
way, so the plugin costs no link in the chain.
"""

from __future__ import annotations

from collections.abc import Sequence

from pycorefile import Directive, Plugin, SetupContext

from ._parse import parse_bufsize


class BufsizePlugin(Plugin):
    """Sets its block's EDNS payload limit (``SetupContext.udp_payload``)."""

    serves_queries = False
    coredns_handler = True

    def __init__(self, size: int) -> None:
        self.size = size

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> BufsizePlugin:
        size = parse_bufsize(directives[0])
        ctx.udp_payload = size
        return cls(size)
