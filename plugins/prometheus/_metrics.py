"""CoreDNS's core DNS metrics: counted in plain ints per reply, turned into families when scraped.

The server calls ``Observer.observe(request, wire)`` after every reply it
sends, including REFUSED answers given before any chain ran. That call does
one tuple build, one dict lookup and a few integer additions; everything
Prometheus-shaped (label names, cumulative buckets, rcode names) happens at
scrape time in ``core_families``.
"""

from __future__ import annotations

import platform
import time
from bisect import bisect_left
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.metrics_core import Metric

from pycorefile import Request, SetupContext, __version__
from pycorefile.metrics import TIME_BUCKETS, bucket_labels
from pycorefile.plugin import Client, Route

DURATION_BUCKETS = TIME_BUCKETS
"""CoreDNS's ``ExponentialBuckets(0.00025, 2, 16)``: 0.25 ms to about 8 s."""
SIZE_BUCKETS = (0, 100, 200, 300, 400, 511, 1023, 2047, 4095, 8291, 16e3, 32e3, 48e3, 64e3)
"""CoreDNS's request and response size buckets, in bytes."""

_TYPE_CODES = {
    1: "A", 28: "AAAA", 15: "MX", 6: "SOA", 5: "CNAME", 12: "PTR", 16: "TXT", 2: "NS",
    33: "SRV", 43: "DS", 48: "DNSKEY", 46: "RRSIG", 47: "NSEC", 50: "NSEC3", 65: "HTTPS",
    64: "SVCB", 251: "IXFR", 252: "AXFR", 255: "ANY",
}  # fmt: skip
"""CoreDNS's monitored query types (``plugin/metrics/vars/monitor.go``): their own ``type``
label; every other type is counted as ``other``, so the rows stay few whatever is asked."""
MONITORED_TYPES = tuple(_TYPE_CODES.values())
OTHER_TYPE = 0
"""The query type a row holds for every type not monitored (0 is no real type)."""
_RCODE_NAMES = {
    0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED",
    6: "YXDOMAIN", 7: "YXRRSET", 8: "NXRRSET", 9: "NOTAUTH", 10: "NOTZONE",
}  # fmt: skip
NO_REPLY = -1
"""The rcode of a query answered with silence (the acl plugin's drop): no response counted."""
DROPPED = "dropped"
"""The zone label of queries answered before reaching a chain (no zone matched)."""

# A row of counts per label combination: these offsets into a flat list.
_COUNT, _DURATION_SUM, _REQUEST_SUM, _RESPONSE_SUM = 0, 1, 2, 3
_DURATION_AT = 4
_REQUEST_AT = _DURATION_AT + len(DURATION_BUCKETS) + 1
_RESPONSE_AT = _REQUEST_AT + len(SIZE_BUCKETS) + 1
_ROW_LEN = _RESPONSE_AT + len(SIZE_BUCKETS) + 1

# A hot row (sizes in its key): count, duration sum, then the duration buckets.
_HOT_DURATION_AT = 2
_HOT_ROW_LEN = _HOT_DURATION_AT + len(DURATION_BUCKETS) + 1
HOT_ROWS_MAX = 4096
"""Hot rows kept before they are folded into the size-free rows (bounds memory)."""

RowKey = tuple[str, str, str, str, int, int, int, str, bool]
"""(server, zone, view, proto, family, query type (monitored, or ``OTHER_TYPE``), rcode,
plugin, DO bit)."""
HotKey = tuple[str, str, str, str, int, int, int, str, bool, int, int]
"""A ``RowKey`` plus the request and response sizes in bytes."""

_FIRST_BOUND = DURATION_BUCKETS[0]
_SIZE_INDEX = bytes(bisect_left(SIZE_BUCKETS, size) for size in range(65536))
"""The size bucket of every possible message length: a lookup instead of a bisect."""


def qtype_label(qtype: int) -> str:
    """CoreDNS's ``qTypeString``: a monitored type's name, or ``other``."""
    return _TYPE_CODES.get(qtype, "other")


def rcode_name(rcode: int) -> str:
    """CoreDNS's ``rcode.ToString``: the name, or ``RCODE<n>``."""
    return _RCODE_NAMES.get(rcode) or f"RCODE{rcode}"


class Counters:
    """The counts themselves. A reload hands them to the new configuration, so
    counters keep growing across reloads as they do in CoreDNS.

    A query is counted in a *hot* row whose key holds its exact request and
    response sizes (a client repeats the same few sizes), so the hot path
    updates three numbers; the size sums and size histograms follow from the
    key when rows are folded into the size-free ``rows`` (at scrape time, or
    when there are ``HOT_ROWS_MAX`` hot rows). Folding is exact.
    """

    def __init__(self) -> None:
        self.hot: dict[HotKey, list[float]] = {}
        self.rows: dict[RowKey, list[float]] = {}
        self.panics = 0

    def fold(self) -> dict[RowKey, list[float]]:
        """Move every hot row into ``rows`` and return them."""
        hot = dict(self.hot)
        self.hot.clear()  # in place: observers keep a reference to it
        rows = self.rows
        durations = len(DURATION_BUCKETS) + 1
        for key, hot_row in hot.items():
            *labels, asked, sent = key
            row_key: RowKey = tuple(labels)  # type: ignore[assignment]
            row = rows.get(row_key)
            if row is None:
                row = rows[row_key] = [0] * _ROW_LEN
            count = hot_row[_COUNT]
            row[_COUNT] += count
            row[_DURATION_SUM] += hot_row[_DURATION_SUM]
            for i in range(durations):
                row[_DURATION_AT + i] += hot_row[_HOT_DURATION_AT + i]
            row[_REQUEST_SUM] += count * asked
            row[_RESPONSE_SUM] += count * sent
            row[_REQUEST_AT + _SIZE_INDEX[asked]] += count
            row[_RESPONSE_AT + _SIZE_INDEX[sent]] += count
        return rows


def server_labels(ctx: SetupContext) -> list[tuple[str, str, str, int]]:
    """``(server label, zone, host, port)`` for each key of a block, as the server labels it."""
    out = []
    for key in ctx.keys:
        for host in ctx.listen_hosts or [""]:
            out.append((f"{key.transport}://{host}:{key.port}", key.zone, host, key.port))
    return out


@dataclass
class Observer:
    """Counts the replies of one configuration into ``counters``.

    Only blocks that enable *prometheus* are counted, as in CoreDNS; queries
    refused before any block was chosen are counted under zone ``dropped``.
    """

    counters: Counters
    enabled: set[tuple[str, str]] = field(default_factory=set)
    blocks: list[SetupContext] = field(default_factory=list)
    """The blocks that enable prometheus (their view is known once setup is done)."""
    listeners: list[tuple[str, str, int]] = field(default_factory=list)
    """(server label, host, port) of every enabled block, to label dropped queries."""
    _dropped_labels: dict[Any, str] = field(default_factory=dict)
    _route_labels: dict[Route, tuple[str, str, str] | tuple[()]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._hot = self.counters.hot

    def add_block(self, ctx: SetupContext) -> None:
        self.blocks.append(ctx)
        for label, zone, host, port in server_labels(ctx):
            self.enabled.add((label, zone))
            self.listeners.append((label, host, port))

    def observe(self, request: Request, wire: bytes) -> None:
        """A reply to ``request`` (the server's reply observer)."""
        route = request.route
        labels = None
        if not route.server:  # no block took it: labelled by the listener it came to
            labels = (self._dropped_label(request), DROPPED, "")
        self.observe_known(
            route,
            request.proto,
            request.client,
            request.qtype,
            request.do,
            request.answered_by,
            len(request.wire),
            wire,
            request.started,
            labels,
        )

    def observe_known(
        self, route: Route, proto: str, client: Client, qtype: int, do: bool,
        answered_by: str, asked: int, wire: bytes, started: float,
        labels: tuple[str, str, str] | None = None,
    ) -> None:  # fmt: skip
        """A reply given from what the server read, with no Request (its fast path)."""
        if labels is None:
            known = self._route_labels.get(route)
            if known is None:
                known = self._labels_of(route)
            if not known:
                return  # a block without prometheus: not counted, as in CoreDNS
            labels = known
        server, zone, view = labels
        key = (
            server,
            zone,
            view,
            proto,
            2 if ":" in client[0] else 1,
            qtype if qtype in _TYPE_CODES else OTHER_TYPE,
            wire[3] & 0xF if wire else NO_REPLY,
            answered_by,
            do,
            asked,
            len(wire),
        )
        hot = self._hot
        row = hot.get(key)
        if row is None:
            if len(hot) >= HOT_ROWS_MAX:
                self.counters.fold()
            row = hot[key] = [0] * _HOT_ROW_LEN
        seconds = time.perf_counter() - started
        row[_COUNT] += 1
        row[_DURATION_SUM] += seconds
        if seconds < _FIRST_BOUND:  # nearly every reply that needed no waiting
            row[_HOT_DURATION_AT] += 1
        else:
            row[_HOT_DURATION_AT + bisect_left(DURATION_BUCKETS, seconds)] += 1

    def _labels_of(self, route: Route) -> tuple[str, str, str] | tuple[()]:
        """``(server, zone, view)`` of a block, or ``()`` when it is not counted (remembered)."""
        view = route.view
        counted = (route.server, route.zone) in self.enabled and any(
            ctx.view == view and (route.server, route.zone) in
            {(label, zone) for label, zone, _h, _p in server_labels(ctx)}
            for ctx in self.blocks
        )  # fmt: skip
        labels = (route.server, route.zone, view)
        found = self._route_labels[route] = labels if counted else ()
        return found

    def failed(self, request: Request, exc: Exception) -> None:
        """A plugin raised (the reply is SERVFAIL): CoreDNS's recovered panic."""
        self.counters.panics += 1

    def _dropped_label(self, request: Request) -> str:
        """The server label of the listener that took a query no block matched."""
        local = request.local
        label = self._dropped_labels.get(local)
        if label is None:
            label = self._dropped_labels[local] = self._find_listener(local)
        return label

    def _find_listener(self, local: tuple[str, int] | None) -> str:
        if local is not None:
            for wanted_host in (local[0], ""):
                for label, host, port in self.listeners:
                    if host == wanted_host and port == local[1]:
                        return label
        labels = {label for label, _h, _p in self.listeners}
        return labels.pop() if len(labels) == 1 else ""


def _histogram(
    name: str, doc: str, labels: list[str], data: dict[tuple[str, ...], list[float]],
    bounds: tuple[float, ...],
) -> HistogramMetricFamily:  # fmt: skip
    """A histogram family from ``{labels: [sum, count per bucket..., count above]}``."""
    family = HistogramMetricFamily(name, doc, labels=labels)
    les = bucket_labels(bounds)
    for values, counts in data.items():
        total = 0.0
        buckets = []
        for le, n in zip(les, counts[1:], strict=True):
            total += n
            buckets.append((le, total))
        family.add_metric(list(values), buckets, counts[0])
    return family


def _counter(
    name: str, doc: str, labels: list[str], data: dict[tuple[str, ...], float]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for values, value in data.items():
        family.add_metric(list(values), value)
    return family


def _add(data: dict[tuple[str, ...], list[float]], key: tuple[str, ...], row: list[float],
         total: int, start: int, width: int) -> None:  # fmt: skip
    acc = data.get(key)
    if acc is None:
        acc = data[key] = [0.0] * (width + 1)
    acc[0] += row[total]
    for i in range(width):
        acc[i + 1] += row[start + i]


def core_families(
    counters: Counters, runner: Any, blocks: Iterable[SetupContext]
) -> Iterator[Metric]:
    """CoreDNS's server metrics with CoreDNS's names, help texts and labels."""
    requests: dict[tuple[str, ...], float] = {}
    do_requests: dict[tuple[str, ...], float] = {}
    responses: dict[tuple[str, ...], float] = {}
    k: tuple[str, ...]
    durations: dict[tuple[str, ...], list[float]] = {}
    request_sizes: dict[tuple[str, ...], list[float]] = {}
    response_sizes: dict[tuple[str, ...], list[float]] = {}
    for key, row in list(counters.fold().items()):
        server, zone, view, proto, ip_family, qtype_code, rcode, plugin, do = key
        count = row[_COUNT]
        k = (server, zone, view, proto, str(ip_family), qtype_label(qtype_code))
        requests[k] = requests.get(k, 0) + count
        if do:
            k = (server, view, zone)
            do_requests[k] = do_requests.get(k, 0) + count
        nd = len(DURATION_BUCKETS) + 1
        ns = len(SIZE_BUCKETS) + 1
        _add(durations, (server, zone, view), row, _DURATION_SUM, _DURATION_AT, nd)
        _add(request_sizes, (server, zone, view, proto), row, _REQUEST_SUM, _REQUEST_AT, ns)
        if rcode == NO_REPLY:
            continue  # a dropped query: no response to count
        k = (server, zone, view, rcode_name(rcode), plugin)
        responses[k] = responses.get(k, 0) + count
        _add(response_sizes, (server, zone, view, proto), row, _RESPONSE_SUM, _RESPONSE_AT, ns)

    yield _counter(
        "coredns_dns_requests_total",
        "Counter of DNS requests made per zone, protocol and family.",
        ["server", "zone", "view", "proto", "family", "type"],
        requests,
    )
    yield _counter(
        "coredns_dns_do_requests_total",
        "Counter of DNS requests with DO bit set per zone.",
        ["server", "view", "zone"],
        do_requests,
    )
    yield _counter(
        "coredns_dns_responses_total",
        "Counter of response status codes.",
        ["server", "zone", "view", "rcode", "plugin"],
        responses,
    )
    yield _histogram(
        "coredns_dns_request_duration_seconds",
        "Histogram of the time (in seconds) each request took per zone.",
        ["server", "zone", "view"],
        durations,
        DURATION_BUCKETS,
    )
    yield _histogram(
        "coredns_dns_request_size_bytes",
        "Size of the EDNS0 UDP buffer in bytes (64K for TCP) per zone and protocol.",
        ["server", "zone", "view", "proto"],
        request_sizes,
        SIZE_BUCKETS,
    )
    yield _histogram(
        "coredns_dns_response_size_bytes",
        "Size of the returned response in bytes.",
        ["server", "zone", "view", "proto"],
        response_sizes,
        SIZE_BUCKETS,
    )

    enabled = GaugeMetricFamily(
        "coredns_plugin_enabled",
        "A metric that indicates whether a plugin is enabled on per server and zone basis.",
        labels=["server", "zone", "view", "name"],
    )
    seen: set[tuple[str, str, str, str]] = set()
    for ctx in blocks:
        # prometheus counts every reply, as CoreDNS's handler does, though not a chain link.
        names = [
            name
            for name, plugin in ctx.plugins.items()
            if plugin.serves_queries or name == "prometheus"
        ]
        for label, zone, _host, _port in server_labels(ctx):
            for name in names:
                if (label, zone, ctx.view, name) not in seen:
                    seen.add((label, zone, ctx.view, name))
                    enabled.add_metric([label, zone, ctx.view, name], 1)
    yield enabled

    build = GaugeMetricFamily(
        "coredns_build_info",
        "A metric with a constant '1' value labeled by version, revision, and goversion "
        "from which CoreDNS was built.",
        labels=["version", "revision", "goversion"],
    )
    runtime = f"{platform.python_implementation().lower()}{platform.python_version()}"
    build.add_metric([__version__, "", runtime], 1)
    yield build
    yield CounterMetricFamily(
        "coredns_panics_total",
        "A metrics that counts the number of panics.",
        value=counters.panics,
    )
    yield CounterMetricFamily(
        "coredns_reload_failed_total",
        "Counter of the number of failed reload attempts.",
        value=int(getattr(runner, "reload_failures", 0)),
    )
