"""The loadbalance plugin: CoreDNS's round robin on every NOERROR reply, cache hits included.

A ``Wrapper`` with ``on_reply``: the reply of the rest of the chain is
reordered on its way back. It also states ``on_known_reply``, the same for
the bytes of a known answer, so a block whose cache comes after it keeps the
server's fast path: a cache hit answered there is reordered too, as CoreDNS
reorders the cache's replies when loadbalance comes first in plugin.cfg.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import dns.message
import dns.rcode
import dns.rdatatype

from pycorefile import Directive, Reply, Request, SetupContext, SetupError, Wrapper

from ._parse import WEIGHTED, LoadbalanceConfig, parse_loadbalance
from ._reorder import (
    Permutation,
    address_of,
    prefer_subnets,
    random_permutation,
    reorder_message,
    reorder_reply,
    round_robin,
)

_AUTHORITY = 1
_TRANSFERS = (dns.rdatatype.AXFR, dns.rdatatype.IXFR)


class LoadbalancePlugin(Wrapper):
    """Shuffles A, AAAA and MX records and puts CNAMEs first, in NOERROR replies."""

    repeatable = True

    def __init__(
        self, config: LoadbalanceConfig, permutation: Permutation = random_permutation
    ) -> None:
        self.config = config
        self.permutation = permutation
        self.plan = self._preferring if config.prefer else self._round_robin

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> LoadbalancePlugin:
        config = parse_loadbalance(directives)
        if config.policy == WEIGHTED:
            raise SetupError(
                "the weighted policy is not supported yet (see docs/compatibility.md)",
                config.directive,
                0,
            )
        return cls(config)

    def _round_robin(
        self, section: int, types: Sequence[int], rdata: Callable[[int], bytes]
    ) -> list[int]:
        return round_robin(types, self.permutation)

    def _preferring(
        self, section: int, types: Sequence[int], rdata: Callable[[int], bytes]
    ) -> list[int]:
        order = round_robin(types, self.permutation)
        if section == _AUTHORITY:
            return order  # as CoreDNS: prefer orders the answer and additional sections
        addresses = [address_of(rtype, rdata(i)) for i, rtype in enumerate(types)]
        return prefer_subnets(order, types, addresses, self.config.prefer)

    def on_reply(self, request: Request, reply: Reply) -> Reply:
        if isinstance(reply, dns.message.Message):
            if reply.rcode() != dns.rcode.NOERROR or request.qtype in _TRANSFERS:
                return reply
            return reorder_message(reply, self.plan)
        return reorder_reply(bytes(reply), self.plan) if reply else reply

    def on_known_reply(self, reply: bytes) -> bytes:
        return reorder_reply(reply, self.plan)
