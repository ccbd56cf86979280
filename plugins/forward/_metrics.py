"""Forwarding counts: plain integers on the hot path, metric families at scrape time.

One ``ForwardStats`` serves every forward directive of a configuration and is
handed to the next configuration on reload, so counters keep growing across
reloads as CoreDNS's process-wide ones do. Upstreams with the same address
share their counters, so each ``to`` label appears once.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from pycorefile.metrics import TIME_BUCKETS, bucket_labels

DURATION_BUCKETS = TIME_BUCKETS
"""CoreDNS's duration buckets: 0.25 ms doubling to about 8 s."""
_LES = bucket_labels(DURATION_BUCKETS)


@dataclass
class Histogram:
    """Counts per bucket (the last one above every bound) and the sum."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(DURATION_BUCKETS) + 1))
    total: float = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds

    def cumulative(self) -> list[tuple[str, float]]:
        out = []
        running = 0
        for le, n in zip(_LES, self.counts, strict=True):
            running += n
            out.append((le, float(running)))
        return out


@dataclass
class UpstreamCounters:
    """What happened with one upstream address."""

    requests: int = 0
    """Tries sent to it (a query tried on two upstreams counts once at each)."""
    responses: dict[str, int] = field(default_factory=dict)
    """Replies accepted, by rcode name."""
    durations: dict[str, Histogram] = field(default_factory=dict)
    healthcheck_failures: int = 0
    mismatched: int = 0
    """Replies dropped: wrong ID, wrong question, or not a readable DNS reply."""
    failures: dict[str, int] = field(default_factory=dict)
    """Tries that failed, by reason (timeout, refused, closed, error)."""
    conn_hits: dict[str, int] = field(default_factory=dict)
    conn_misses: dict[str, int] = field(default_factory=dict)

    def answered(self, rcode: str, seconds: float) -> None:
        self.responses[rcode] = self.responses.get(rcode, 0) + 1
        histogram = self.durations.get(rcode)
        if histogram is None:
            histogram = self.durations[rcode] = Histogram()
        histogram.observe(seconds)

    def connection(self, proto: str, reused: bool) -> None:
        """Count a TCP or TLS try that found an idle connection (``reused``) or opened one."""
        counts = self.conn_hits if reused else self.conn_misses
        counts[proto] = counts.get(proto, 0) + 1

    def failed(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1


@dataclass
class ForwardStats:
    """Every forward count of a configuration (and of the ones before it)."""

    upstreams: dict[str, UpstreamCounters] = field(default_factory=dict)
    healthcheck_broken: int = 0
    """Queries that found every upstream down."""
    max_concurrent_rejects: int = 0

    def upstream(self, label: str) -> UpstreamCounters:
        counters = self.upstreams.get(label)
        if counters is None:
            counters = self.upstreams[label] = UpstreamCounters()
        return counters

    def families(self) -> Iterator[Metric]:
        """The metric families, CoreDNS's names first (both the forward and proxy ones)."""
        rows = sorted(self.upstreams.items())
        requests = CounterMetricFamily(
            "coredns_forward_requests", "Counter of requests made per upstream.", labels=["to"]
        )
        responses = CounterMetricFamily(
            "coredns_forward_responses",
            "Counter of responses received per upstream.",
            labels=["to", "rcode"],
        )
        durations = HistogramMetricFamily(
            "coredns_forward_request_duration_seconds",
            "Histogram of the time each request took.",
            labels=["to", "rcode"],
        )
        proxy_durations = HistogramMetricFamily(
            "coredns_proxy_request_duration_seconds",
            "Histogram of the time each request took.",
            labels=["proxy_name", "to", "rcode"],
        )
        hc_failures = CounterMetricFamily(
            "coredns_forward_healthcheck_failures",
            "Counter of the number of failed healthchecks.",
            labels=["to"],
        )
        proxy_hc_failures = CounterMetricFamily(
            "coredns_proxy_healthcheck_failures",
            "Counter of the number of failed healthchecks.",
            labels=["proxy_name", "to"],
        )
        hits = CounterMetricFamily(
            "coredns_proxy_conn_cache_hits",
            "Counter of connection cache hits per upstream and protocol.",
            labels=["proxy_name", "to", "proto"],
        )
        misses = CounterMetricFamily(
            "coredns_proxy_conn_cache_misses",
            "Counter of connection cache misses per upstream and protocol.",
            labels=["proxy_name", "to", "proto"],
        )
        mismatched = CounterMetricFamily(
            "coredns_forward_mismatched_replies",
            "Counter of upstream replies dropped because their ID, question or source "
            "did not match the query, or they could not be read.",
            labels=["to"],
        )
        failures = CounterMetricFamily(
            "coredns_forward_upstream_failures",
            "Counter of tries that got no usable reply, per upstream and reason.",
            labels=["to", "reason"],
        )
        for to, c in rows:
            requests.add_metric([to], c.requests)
            hc_failures.add_metric([to], c.healthcheck_failures)
            proxy_hc_failures.add_metric(["forward", to], c.healthcheck_failures)
            mismatched.add_metric([to], c.mismatched)
            for rcode, n in sorted(c.responses.items()):
                responses.add_metric([to, rcode], n)
            for rcode, h in sorted(c.durations.items()):
                durations.add_metric([to, rcode], h.cumulative(), h.total)
                proxy_durations.add_metric(["forward", to, rcode], h.cumulative(), h.total)
            for reason, n in sorted(c.failures.items()):
                failures.add_metric([to, reason], n)
            for proto, n in sorted(c.conn_hits.items()):
                hits.add_metric(["forward", to, proto], n)
            for proto, n in sorted(c.conn_misses.items()):
                misses.add_metric(["forward", to, proto], n)
        broken = CounterMetricFamily(
            "coredns_forward_healthcheck_broken",
            "Counter of the number of complete failures of the healthchecks.",
        )
        broken.add_metric([], self.healthcheck_broken)
        rejects = CounterMetricFamily(
            "coredns_forward_max_concurrent_rejects",
            "Counter of the number of queries rejected because the concurrent queries "
            "were at maximum.",
        )
        rejects.add_metric([], self.max_concurrent_rejects)
        yield from (
            requests, responses, durations, proxy_durations, hc_failures, proxy_hc_failures,
            broken, rejects, hits, misses, mismatched, failures,
        )  # fmt: skip
