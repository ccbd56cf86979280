"""The prometheus plugin: CoreDNS's metrics on ``/metrics``, one registry per configuration."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import CONTENT_TYPE_LATEST as OPENMETRICS

from pycorefile import Directive, Plugin, SetupContext, SetupError, check_args
from pycorefile.http import HttpRequest, HttpResponse
from pycorefile.metrics import openmetrics_float
from pycorefile.plugin import parse_http_address

from ._metrics import Counters, Observer, core_families

log = logging.getLogger("pycorefile")

DEFAULT_ADDRESS = "localhost:9153"
PATH = "/metrics"
STATE_KEY = "prometheus.state"
"""Where a configuration's ``MetricsState`` lives in ``SetupContext.shared``."""


def parse_prometheus(directives: Sequence[Directive]) -> str:
    """``prometheus [ADDRESS]``: the address to serve ``/metrics`` on."""
    d = directives[0]
    check_args(d, 0, 1)
    for option in d.block or ():
        raise SetupError(f"unknown property '{option.name}'", option)
    return parse_http_address(d, 0) if d.args else DEFAULT_ADDRESS


class _Collector:
    """Yields every family at scrape time: the core's, then each plugin's ``metrics()``."""

    def __init__(self, state: MetricsState) -> None:
        self.state = state

    def describe(self) -> list[Metric]:
        return []  # names vary with the configuration: nothing to check up front

    def collect(self) -> Iterator[Metric]:
        state = self.state
        families: dict[str, Metric] = {}
        for family in core_families(state.counters, state.runner, state.blocks):
            families[family.name] = family
        seen: set[int] = set()
        for ctx in state.blocks:
            for plugin in list(ctx.plugins.values()):
                if id(plugin) in seen:
                    continue
                seen.add(id(plugin))
                try:
                    produced = list(plugin.metrics())
                except Exception:
                    log.exception("plugin/%s: collecting metrics failed", plugin.name)
                    continue
                for family in produced:
                    # The same family from several blocks: one family, all the samples.
                    known = families.get(family.name)
                    if known is None:
                        families[family.name] = family
                    elif known.type == family.type:
                        known.samples.extend(family.samples)
        yield from families.values()


class _OpenMetricsView:
    """A registry's families with histogram bounds as client_golang writes them in
    OpenMetrics (``le="100.0"``; the families hold the text format's ``le="100"``)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for family in self.registry.collect():
            if family.type in ("histogram", "gaugehistogram"):
                family.samples = [
                    s._replace(labels={**s.labels, "le": openmetrics_float(s.labels["le"])})
                    if "le" in s.labels
                    else s
                    for s in family.samples
                ]
            yield family


@dataclass
class MetricsState:
    """What every *prometheus* block of one configuration shares."""

    counters: Counters
    runner: Any
    observer: Observer = field(init=False)
    blocks: list[SetupContext] = field(default_factory=list)
    registry: CollectorRegistry = field(init=False)

    def __post_init__(self) -> None:
        self.observer = Observer(self.counters)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """``GET /metrics``, in the exposition format the scraper asks for."""
        encoder, content_type = choose_encoder(request.headers.get("accept", ""))
        if content_type.startswith(OPENMETRICS.split(";")[0]):
            return HttpResponse(200, encoder(_OpenMetricsView(self.registry)), content_type)
        return HttpResponse(200, encoder(self.registry), content_type)


def _state(ctx: SetupContext) -> MetricsState:
    state = ctx.shared.get(STATE_KEY)
    if isinstance(state, MetricsState):
        return state
    runner = ctx.shared.get("runner")
    # On reload, carry the running configuration's counts over, as CoreDNS's
    # process-wide counters survive a reload.
    running = getattr(getattr(runner, "server", None), "config", None)
    previous = running.shared.get(STATE_KEY) if running is not None else None
    counters = previous.counters if isinstance(previous, MetricsState) else Counters()
    state = MetricsState(counters, runner)
    ctx.shared[STATE_KEY] = state
    ctx.shared["reply_observers"].append(state.observer)
    ctx.shared["failure_observers"].append(state.observer.failed)
    return state


class PrometheusPlugin(Plugin):
    """Exports CoreDNS's metrics; not a link of the chain.

    Replies are counted by an observer the server calls after each reply (so
    queries refused before any chain are counted too, and no wrapper costs a
    call per query); exceptions no plugin handled, CoreDNS's
    ``coredns_panics_total``, are counted by the server's failure observer.
    """

    serves_queries = False
    coredns_handler = True

    def __init__(self, address: str, state: MetricsState) -> None:
        self.address = address
        self.state = state
        self.counters = state.counters

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> PrometheusPlugin:
        address = parse_prometheus(directives)
        state = _state(ctx)
        state.blocks.append(ctx)
        state.observer.add_block(ctx)
        ctx.http_route(address, PATH, state.handle)
        return cls(address, state)
