"""The grpc plugin: forward a zone's queries over gRPC (CoreDNS's ``DnsService``)."""

from __future__ import annotations

import bisect
import random
import time
from collections.abc import Iterable, Sequence
from itertools import count

import dns.rcode
import trio
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from pycorefile import Directive, Pending, Plugin, PluginError, Reply, Request, SetupContext
from pycorefile.metrics import TIME_BUCKETS, bucket_labels
from pycorefile.wire import FLAG_QR, WireError, read_query, reply_rcode

from ._channel import Channel, GrpcError
from ._message import STATUS_NOT_FOUND, MessageError
from ._parse import GrpcConfig, parse_grpc

DEADLINE = 5.0
"""How long one query may take across all upstreams (CoreDNS's defaultTimeout)."""


class _Stats:
    """CoreDNS's grpc metrics, counted in plain numbers and turned into families when scraped."""

    def __init__(self) -> None:
        self.requests: dict[str, int] = {}
        self.responses: dict[tuple[str, str], int] = {}
        self.durations: dict[str, list[float]] = {}

    def request(self, to: str) -> None:
        self.requests[to] = self.requests.get(to, 0) + 1

    def response(self, to: str, rcode: int, seconds: float) -> None:
        key = (dns.rcode.to_text(dns.rcode.Rcode.make(rcode)), to)
        self.responses[key] = self.responses.get(key, 0) + 1
        row = self.durations.setdefault(to, [0.0] * (len(TIME_BUCKETS) + 2))
        row[0] += seconds
        row[1 + bisect.bisect_left(TIME_BUCKETS, seconds)] += 1

    def families(self) -> Iterable[Metric]:
        requests = CounterMetricFamily(
            "coredns_grpc_requests_total", "Counter of requests made per upstream.", labels=["to"]
        )
        for to, n in self.requests.items():
            requests.add_metric([to], n)
        responses = CounterMetricFamily(
            "coredns_grpc_responses_total",
            "Counter of requests made per upstream.",
            labels=["rcode", "to"],
        )
        for (rcode, to), n in self.responses.items():
            responses.add_metric([rcode, to], n)
        durations = HistogramMetricFamily(
            "coredns_grpc_request_duration_seconds",
            "Histogram of the time each request took.",
            labels=["to"],
        )
        les = bucket_labels(TIME_BUCKETS)
        for to, row in self.durations.items():
            cumulative = 0.0
            buckets: list[tuple[str, float]] = []
            for le, seen in zip(les, row[1:], strict=True):
                cumulative += seen
                buckets.append((le, cumulative))
            durations.add_metric([to], buckets, row[0])
        return (requests, responses, durations)


class GrpcPlugin(Plugin):
    """Queries for FROM (less the ``except`` names) go to the upstreams over gRPC."""

    def __init__(self, config: GrpcConfig) -> None:
        self.config = config
        tls = config.tls.context() if config.tls is not None else None
        if tls is not None:
            tls.set_alpn_protocols(["h2"])
        self.channels = [
            (
                Channel(up.host, up.port, tls, config.tls_servername or up.server_name or ""),
                up.label,
            )
            for up in config.upstreams
        ]
        self.stats = _Stats()
        self._turn = count()

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> GrpcPlugin:
        return cls(parse_grpc(directives))

    def handle(self, request: Request) -> Reply | Pending:
        if not self.config.matches(request.name):
            return self.next.handle(request)
        return Pending(self._ask(request))

    def _order(self) -> list[tuple[Channel, str]]:
        channels = self.channels
        if self.config.policy == "random":
            return random.sample(channels, len(channels))
        if self.config.policy == "round_robin":
            start = next(self._turn) % len(channels)
            return channels[start:] + channels[:start]
        return list(channels)

    async def _ask(self, request: Request) -> Reply | Pending:
        deadline = trio.current_time() + DEADLINE
        failure: Exception | None = None
        for channel, to in self._order():
            if trio.current_time() >= deadline:
                break
            self.stats.request(to)
            started = time.perf_counter()
            try:
                with trio.fail_at(deadline):
                    reply = await channel.call(request.wire)
            except GrpcError as exc:
                if exc.status != STATUS_NOT_FOUND:
                    failure = exc
                    continue
                reply = request.error(dns.rcode.NXDOMAIN)  # CoreDNS: NOT_FOUND is NXDOMAIN
            except (MessageError, OSError) as exc:
                failure = exc
                continue
            except trio.TooSlowError:
                failure = TimeoutError(f"no reply within {DEADLINE:g}s")
                break
            rcode = reply_rcode(reply) if len(reply) >= 12 else dns.rcode.FORMERR
            self.stats.response(to, rcode, time.perf_counter() - started)
            if not answers(request, reply):
                return request.error(dns.rcode.FORMERR)
            if (
                rcode == dns.rcode.NXDOMAIN
                and self.config.fallthrough.through(request.name)
                and not self.is_last  # no plugin to fall through to: the NXDOMAIN stands
            ):
                return self.next.handle(request)
            return reply
        if self.config.fallthrough.through(request.name):
            return self.next.handle(request)
        raise PluginError(f"grpc: no upstream answered: {failure}")

    async def run(self) -> None:
        async with trio.open_nursery() as nursery:
            for channel, _to in self.channels:
                nursery.start_soon(channel.run)

    def metrics(self) -> Iterable[Metric]:
        return self.stats.families()


def answers(request: Request, reply: bytes) -> bool:
    """True when ``reply`` is a response to ``request``'s question (CoreDNS's ``Match``)."""
    try:
        info = read_query(reply)
    except WireError:
        return False
    if not info.flags & FLAG_QR or info.qdcount != 1:
        return False
    if (info.qtype, info.qclass) != (request.qtype, request.qclass):
        return False
    return reply[12 : info.name_end].lower() == request.key[: request.name_end - 12]
