"""The acl plugin: decides per query before anything after it answers."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import dns.rcode

from pycorefile import DROP, Directive, Reply, Request, SetupContext, Wrapper
from pycorefile.wire import extended_error, with_edns_options

from ._rules import AclConfig, Action, Verdicts, parse_acl

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

_MEMO_MAX = 8192
_METRICS = {
    Action.ALLOW: ("coredns_acl_allowed_requests", "Counter of DNS requests being allowed."),
    Action.BLOCK: ("coredns_acl_blocked_requests", "Counter of DNS requests being blocked."),
    Action.FILTER: ("coredns_acl_filtered_requests", "Counter of DNS requests being filtered."),
    Action.DROP: ("coredns_acl_dropped_requests", "Counter of DNS requests being dropped."),
}

EDE_BLOCKED = 15
"""The Extended DNS Error INFO-CODE of a blocked query (RFC 8914)."""
EDE_FILTERED = 17


class AclPlugin(Wrapper):
    """Allow, block (REFUSED), filter (empty NOERROR) or drop (no reply) queries.

    Blocked and filtered replies carry an Extended DNS Error (Blocked,
    Filtered) when the client sent EDNS, as CoreDNS's. Other plugins whose
    stored answers skip the chain after them (autopath) ask ``admits`` first.

    A wrapper with ``on_query`` only: each query is decided and counted once,
    before the rest of the chain, whether the rest answers now or waits.
    """

    repeatable = True

    def __init__(self, config: AclConfig) -> None:
        self.config = config
        # What the rules say depends only on (client address, type), the zones
        # aside: remember it, bounded.
        self._memo: dict[tuple[str, int], Verdicts] = {}
        self.counts: dict[tuple[Action, str, str], int] = {}
        """Replies by (action, server, zone); allowed ones have zone '' (CoreDNS has none)."""

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> AclPlugin:
        return cls(parse_acl(directives, ctx))

    def _verdicts(self, request: Request) -> Verdicts:
        key = (request.client[0], request.qtype)
        verdicts = self._memo.get(key)
        if verdicts is None:
            verdicts = self.config.verdicts(request.qtype, request.client[0])
            if len(self._memo) >= _MEMO_MAX:
                self._memo.clear()
            self._memo[key] = verdicts
        return verdicts

    def _decide(self, request: Request) -> tuple[Action, str]:
        return self.config.decide(request.name, self._verdicts(request))

    def admits(self, request: Request, names: Iterable[str]) -> bool:
        """True when this client asking ``names`` (lowercased FQDNs) with the request's type
        would be let through for every one. Nothing is counted."""
        verdicts = self._verdicts(request)
        decide = self.config.decide
        return all(decide(name, verdicts)[0] is Action.ALLOW for name in names)

    def _count(self, request: Request, action: Action, zone: str) -> None:
        counted = (action, request.server, zone)
        self.counts[counted] = self.counts.get(counted, 0) + 1

    def _refuse(self, request: Request, action: Action) -> Reply:
        if action is Action.DROP:
            return DROP
        if action is Action.BLOCK:
            rcode, info_code = dns.rcode.REFUSED, EDE_BLOCKED
        else:  # FILTER: NOERROR, nothing in it
            rcode, info_code = dns.rcode.NOERROR, EDE_FILTERED
        reply = request.error(rcode)
        # Only to a client that sent EDNS: an OPT record to one that did not is
        # forbidden (RFC 6891, 7), though CoreDNS sends it.
        return with_edns_options(reply, extended_error(info_code)) if request.edns else reply

    def on_query(self, request: Request) -> Reply | None:
        """Decide and count once; a query allowed goes on (None), the others get their reply."""
        action, zone = self._decide(request)
        self._count(request, action, zone)
        if action is Action.ALLOW:
            return None
        return self._refuse(request, action)

    def metrics(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily  # at scrape time (~2 MB)

        families = {
            action: CounterMetricFamily(
                name,
                doc,
                labels=["server", "view"] if action is Action.ALLOW else ["server", "zone", "view"],
            )
            for action, (name, doc) in _METRICS.items()
        }
        for (action, server, zone), count in self.counts.items():
            labels = [server, ""] if action is Action.ALLOW else [server, zone, ""]
            families[action].add_metric(labels, count)
        return families.values()
