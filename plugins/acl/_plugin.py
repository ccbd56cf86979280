"""The acl plugin: decides per query before anything else answers it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import dns.rcode

from pycorefile import DROP, Directive, Plugin, Reply, Request, SetupContext
from pycorefile._zones import match_zone

from ._rules import AclConfig, Action, parse_acl

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

_MEMO_MAX = 8192
_METRICS = {
    Action.ALLOW: ("coredns_acl_allowed_requests", "Counter of DNS requests being allowed."),
    Action.BLOCK: ("coredns_acl_blocked_requests", "Counter of DNS requests being blocked."),
    Action.FILTER: ("coredns_acl_filtered_requests", "Counter of DNS requests being filtered."),
    Action.DROP: ("coredns_acl_dropped_requests", "Counter of DNS requests being dropped."),
}


class AclPlugin(Plugin):
    """Allow, block (REFUSED), filter (empty NOERROR) or drop (no reply) queries."""

    repeatable = True

    def __init__(self, config: AclConfig) -> None:
        self.config = config
        # Decisions depend only on (client address, type): remember them, bounded.
        self._memo: dict[tuple[str, int], Action] = {}
        self.counts: dict[tuple[Action, str, str], int] = {}

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> AclPlugin:
        return cls(parse_acl(directives, ctx))

    def _decide(self, request: Request) -> tuple[Action, str]:
        zone = match_zone(request.name, self.config.zones)
        if zone is None:
            return Action.ALLOW, ""
        key = (request.client[0], request.qtype)
        action = self._memo.get(key)
        if action is None:
            action = self.config.decide(request.qtype, request.client[0])
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[key] = action
        return action, zone

    def _count(self, request: Request, action: Action, zone: str) -> None:
        if zone:
            counted = (action, request.server, zone)
            self.counts[counted] = self.counts.get(counted, 0) + 1

    def _refuse(self, request: Request, action: Action) -> Reply:
        request.answered_by = self.name
        if action is Action.DROP:
            return DROP
        if action is Action.BLOCK:
            return request.error(dns.rcode.REFUSED)
        return request.reply()  # FILTER: NOERROR, nothing in it

    def serve_now(self, request: Request) -> Reply | None:
        action, zone = self._decide(request)
        if action is not Action.ALLOW:
            self._count(request, action, zone)
            return self._refuse(request, action)
        reply = self.next.serve_now(request)
        if reply is not None:  # counted only once the query is settled
            self._count(request, action, zone)
        return reply

    async def serve(self, request: Request) -> Reply:
        action, zone = self._decide(request)
        self._count(request, action, zone)
        if action is not Action.ALLOW:
            return self._refuse(request, action)
        return await self.next.serve(request)

    def metrics(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily  # at scrape time (~2 MB)

        families = {
            action: CounterMetricFamily(name, doc, labels=["server", "zone", "view"])
            for action, (name, doc) in _METRICS.items()
        }
        for (action, server, zone), count in self.counts.items():
            families[action].add_metric([server, zone, ""], count)
        return families.values()
