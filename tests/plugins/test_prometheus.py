"""prometheus: CoreDNS's series over real HTTP after known queries, and content negotiation."""

from __future__ import annotations

import http.client
import re
import socket
import struct
import time
from collections.abc import Iterable, Sequence
from pathlib import Path

import dns.rcode
import dns.rrset
import pytest
import trio
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from pycorefile import (
    CorefileError,
    Directive,
    Plugin,
    Request,
    Result,
    Server,
    SetupContext,
    load_config,
    open_server,
)
from pycorefile._registry import Registry
from pycorefile.corefile import parse_corefile
from pycorefile.testing import Upstream, make_query, query, query_wire
from pycorefile_plugins.bind import BindPlugin
from pycorefile_plugins.errors import ErrorsPlugin
from pycorefile_plugins.forward import ForwardPlugin
from pycorefile_plugins.prometheus import (
    DEFAULT_ADDRESS,
    MetricsState,
    PrometheusPlugin,
    parse_prometheus,
)
from pycorefile_plugins.whoami import WhoamiPlugin

from ..process import ServerProcess, free_port


class CountingPlugin(Plugin):
    """Answers with an A record, raises for ``boom.*``, drops ``drop.*``; counts its answers."""

    after = "cache"

    def __init__(self, zone: str) -> None:
        self.zone = zone
        self.answered = 0

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> CountingPlugin:
        return cls(ctx.zones[0])

    def handle(self, request: Request) -> Result:
        if request.name.startswith("boom."):
            raise RuntimeError("kaput")
        if request.name.startswith("drop."):
            return b""  # answer with silence, as the acl plugin's drop
        self.answered += 1
        reply = request.reply(authoritative=True)
        if request.qtype == 1:
            reply.answer.append(dns.rrset.from_text(request.qname, 60, "IN", "A", "192.0.2.1"))
        return reply

    def metrics(self) -> Iterable[Metric]:
        family = CounterMetricFamily(
            "coredns_counting_answers_total", "Answers given.", labels=["zone"]
        )
        family.add_metric([self.zone], self.answered)
        yield family


def registry() -> Registry:
    return Registry.from_classes(
        {
            "bind": BindPlugin,
            "prometheus": PrometheusPlugin,
            "errors": ErrorsPlugin,
            "whoami": WhoamiPlugin,
            "counting": CountingPlugin,
        }
    )


async def http_get(
    address: tuple[str, int], path: str, accept: str = ""
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on a fresh connection: status, headers, body."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        await sock.connect(address)
        head = f"GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n"
        if accept:
            head += f"Accept: {accept}\r\n"
        await sock.send((head + "\r\n").encode())
        data = b""
        with trio.fail_after(5):
            while chunk := await sock.recv(65536):
                data += chunk
    head_bytes, _, body = data.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    assert int(headers["content-length"]) == len(body)
    return int(lines[0].split()[1]), headers, body


Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def samples(text: str) -> tuple[Samples, dict[str, int]]:
    """Every sample by (name, labels), and how often each family appears."""
    out: Samples = {}
    families: dict[str, int] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = families.get(family.name, 0) + 1
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out, families


def value(found: Samples, metric: str, **labels: str) -> float:
    return found.get((metric, frozenset(labels.items())), 0.0)


async def scrape(server: Server, accept: str = "") -> tuple[Samples, dict[str, int]]:
    status, headers, body = await http_get(server.http_address("127.0.0.1", 0), "/metrics", accept)
    assert status == 200
    assert headers["content-type"].startswith("text/plain; version=0.0.4")
    return samples(body.decode())


COREFILE = """\
count.test:0 {
    bind 127.0.0.1
    prometheus 127.0.0.1:0
    counting
}
other.test:0 {
    bind 127.0.0.1
    prometheus 127.0.0.1:0
    counting
}
quiet.test:0 {
    bind 127.0.0.1
    counting
}
"""
SERVER = "dns://127.0.0.1:0"


# -- Parsing ----------------------------------------------------------------------------


def directives(text: str) -> tuple[Directive, ...]:
    return parse_corefile(".:53 {\n" + text + "\n}\n")[0].directives


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("prometheus", DEFAULT_ADDRESS),
        ("prometheus :9253", ":9253"),
        ("prometheus [::1]:9153", "[::1]:9153"),
        ("prometheus 0.0.0.0:9153", "0.0.0.0:9153"),
    ],
)
def test_parse(text: str, address: str) -> None:
    assert parse_prometheus(directives(text)) == address
    assert DEFAULT_ADDRESS == "localhost:9153"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("prometheus localhost", "missing port in address"),
        ("prometheus ::1:9153", "too many colons"),
        ("prometheus :99999", "invalid port"),
        ("prometheus :9153 :9154", "Wrong argument count"),
        ("prometheus {\n  runtime_metrics\n}", "unknown property 'runtime_metrics'"),
    ],
)
def test_setup_errors(text: str, message: str) -> None:
    with pytest.raises(CorefileError, match=message) as info:
        load_config(".:53 {\n" + text + "\n}\n", registry=registry())
    assert "plugin/prometheus" in str(info.value)


# -- Serving ----------------------------------------------------------------------------


async def test_core_series_after_known_queries() -> None:
    async with open_server(COREFILE, registry=registry()) as server:
        sizes = []
        for name, rdtype in [
            ("a.count.test.", "A"),
            ("b.count.test.", "A"),
            ("c.count.test.", "MX"),
        ]:
            wire = make_query(name, rdtype).to_wire()
            reply = await query_wire(server, wire)
            assert reply is not None
            sizes.append((len(wire), len(reply)))
        await query(server, "d.count.test.", "NAPTR", proto="tcp")
        await query(server, "e.count.test.", "AAAA", do=True)
        await query(server, "x.other.test.", "A", proto="tcp")
        await query(server, "x.quiet.test.", "A")  # block without prometheus: not counted
        refused = await query(server, "nowhere.example.", "A")
        failed = await query(server, "boom.count.test.", "A")
        silence = await query_wire(
            server, make_query("drop.count.test.", "TXT").to_wire(), timeout=0.3
        )
        found, families = await scrape(server)

    assert refused.rcode() == dns.rcode.REFUSED
    assert failed.rcode() == dns.rcode.SERVFAIL
    assert silence is None
    assert all(n == 1 for n in families.values()), families
    req = "coredns_dns_requests_total"
    common = {"server": SERVER, "view": ""}
    assert value(found, req, zone="count.test.", proto="udp", family="1", type="A", **common) == 3
    assert value(found, req, zone="count.test.", proto="udp", family="1", type="MX", **common) == 1
    assert (
        value(found, req, zone="count.test.", proto="tcp", family="1", type="other", **common) == 1
    )
    assert (
        value(found, req, zone="count.test.", proto="udp", family="1", type="AAAA", **common) == 1
    )
    assert value(found, req, zone="other.test.", proto="tcp", family="1", type="A", **common) == 1
    assert value(found, req, zone="dropped", proto="udp", family="1", type="A", **common) == 1
    # A query answered with silence is a request, but no response.
    assert value(found, req, zone="count.test.", proto="udp", family="1", type="TXT", **common) == 1
    assert not [k for k in found if ("zone", "quiet.test.") in k[1]]

    resp = "coredns_dns_responses_total"
    assert value(found, resp, zone="count.test.", rcode="NOERROR", plugin="counting", **common) == 5
    assert (
        value(found, resp, zone="count.test.", rcode="SERVFAIL", plugin="counting", **common) == 1
    )
    assert value(found, resp, zone="dropped", rcode="REFUSED", plugin="", **common) == 1
    assert value(found, resp, zone="other.test.", rcode="NOERROR", plugin="counting", **common) == 1
    responses = sum(v for k, v in found.items() if k[0] == resp)
    assert responses == 8  # five NOERROR, one SERVFAIL in count.test; other.test; REFUSED

    do = "coredns_dns_do_requests_total"
    assert value(found, do, zone="count.test.", **common) == 1

    dur = "coredns_dns_request_duration_seconds"
    # Every query to count.test (the dropped one too), with no type label, as CoreDNS.
    assert value(found, dur + "_count", zone="count.test.", **common) == 7
    assert value(found, dur + "_bucket", zone="count.test.", le="+Inf", **common) == 7
    assert value(found, dur + "_bucket", zone="count.test.", le="0.00025", **common) <= 7
    assert 0 < value(found, dur + "_sum", zone="count.test.", **common) < 7 * 3
    buckets = [k for k in found if k[0] == dur + "_bucket" and ("zone", "count.test.") in k[1]]
    assert len({dict(k[1])["le"] for k in buckets}) == 17
    assert not [k for k in found if k[0].startswith(dur) and "type" in dict(k[1])]

    size = "coredns_dns_request_size_bytes"
    labels = {"zone": "count.test.", "proto": "udp", **common}
    # Over UDP: three raw queries, AAAA with DO, SERVFAIL, and the dropped TXT.
    assert value(found, size + "_count", **labels) == 6
    assert value(found, size + "_bucket", le="100", **labels) == 6
    assert value(found, size + "_bucket", le="0", **labels) == 0
    assert value(found, size + "_sum", **labels) >= sum(q for q, _r in sizes)
    rsize = "coredns_dns_response_size_bytes"
    assert value(found, rsize + "_count", **labels) == 5
    assert value(found, rsize + "_sum", **labels) >= sum(r for _q, r in sizes)

    enabled = "coredns_plugin_enabled"
    assert value(found, enabled, zone="count.test.", name="prometheus", **common) == 1
    assert value(found, enabled, zone="count.test.", name="counting", **common) == 1
    assert value(found, enabled, zone="count.test.", name="bind", **common) == 0
    assert not [k for k in found if k[0] == enabled and ("zone", "quiet.test.") in k[1]]

    # No errors plugin: the exception went unhandled, CoreDNS's "panic".
    assert value(found, "coredns_panics_total") == 1
    assert value(found, "coredns_reload_failed_total") == 0
    build = [k for k in found if k[0] == "coredns_build_info"]
    assert len(build) == 1 and dict(build[0][1])["version"]
    # Each block's plugin metrics, merged into one family.
    answers = "coredns_counting_answers_total"
    assert value(found, answers, zone="count.test.") == 5
    assert value(found, answers, zone="other.test.") == 1
    assert families["coredns_counting_answers"] == 1
    assert value(found, "process_cpu_seconds_total") > 0


async def test_size_histograms_stay_exact_across_folds(monkeypatch: pytest.MonkeyPatch) -> None:
    # Rows keyed by exact sizes are folded when there are too many: nothing is lost.
    monkeypatch.setattr("pycorefile_plugins.prometheus._metrics.HOT_ROWS_MAX", 3)
    async with open_server(COREFILE, registry=registry()) as server:
        asked = answered = 0
        for i in range(12):
            wire = make_query("x" * (i + 1) + ".count.test.", "A").to_wire()
            reply = await query_wire(server, wire)
            assert reply is not None
            asked += len(wire)
            answered += len(reply)
        found, _ = await scrape(server)
        again, _ = await scrape(server)  # a scrape folds; a second one sees the same
    labels = {"server": SERVER, "view": "", "zone": "count.test.", "proto": "udp"}
    for result in (found, again):
        assert value(result, "coredns_dns_request_size_bytes_sum", **labels) == asked
        assert value(result, "coredns_dns_request_size_bytes_count", **labels) == 12
        assert value(result, "coredns_dns_response_size_bytes_sum", **labels) == answered
        assert value(result, "coredns_dns_response_size_bytes_count", **labels) == 12
        duration = "coredns_dns_request_duration_seconds_count"
        assert value(result, duration, **labels_of(labels)) == 12


def labels_of(labels: dict[str, str]) -> dict[str, str]:
    """The duration histogram's labels: no ``proto``."""
    return {k: v for k, v in labels.items() if k != "proto"}


async def test_a_panic_is_counted_with_the_errors_plugin_too() -> None:
    # CoreDNS's errors plugin logs returned errors; a panic goes past it to
    # the server, which counts it.
    text = "count.test:0 {\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n errors\n counting\n}\n"
    async with open_server(text, registry=registry()) as server:
        reply = await query(server, "boom.count.test.", "A")
        found, _ = await scrape(server)
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert value(found, "coredns_panics_total") == 1
    labels = {"server": SERVER, "view": "", "zone": "count.test."}
    assert (
        value(found, "coredns_dns_responses_total", rcode="SERVFAIL", plugin="counting", **labels)
        == 1
    )


async def test_content_negotiation() -> None:
    text = ".:0 {\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n whoami\n}\n"
    async with open_server(text, registry=registry()) as server:
        await query(server, "example.org.", "A")
        address = server.http_address("127.0.0.1", 0)
        plain = await http_get(address, "/metrics")
        modern = await http_get(
            address, "/metrics", "text/plain;version=1.0.0;escaping=underscores"
        )
        om = await http_get(
            address,
            "/metrics",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        missing = await http_get(address, "/other")
    assert plain[1]["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert modern[1]["content-type"].startswith("text/plain; version=1.0.0")
    assert om[0] == 200
    assert om[1]["content-type"].startswith("application/openmetrics-text; version=1.0.0")
    assert om[2].endswith(b"# EOF\n")
    names = {f.name for f in openmetrics_families(om[2].decode())}  # type: ignore[no-untyped-call]
    assert {"coredns_dns_requests", "coredns_dns_request_duration_seconds"} <= names
    assert missing[0] == 404


async def test_each_block_on_its_own_address_sees_the_same_registry() -> None:
    text = (
        "a.test:0 {\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n whoami\n}\n"
        "b.test:0 {\n bind 127.0.0.1\n prometheus 127.0.0.2:0\n whoami\n}\n"
    )
    async with open_server(text, registry=registry()) as server:
        await query(server, "x.a.test.", "A")
        await query(server, "x.b.test.", "A")
        first = await http_get(server.http_address("127.0.0.1", 0), "/metrics")
        second = await http_get(server.http_address("127.0.0.2", 0), "/metrics")
    for _status, _headers, body in (first, second):
        found, _ = samples(body.decode())
        for zone in ("a.test.", "b.test."):
            labels = {"server": SERVER, "zone": zone, "view": "", "proto": "udp", "family": "1"}
            assert value(found, "coredns_dns_requests_total", type="A", **labels) == 1


# -- Query types: CoreDNS's monitored list, every other type is "other" -----------------


async def test_unknown_types_count_as_other_and_the_rows_stay_few() -> None:
    # 600 distinct unassigned types, and a few monitored ones (SVCB among them, as CoreDNS).
    unknown = range(1000, 1600)
    known = ["A", "SVCB", "HTTPS", "ANY"]
    async with open_server(COREFILE, registry=registry()) as server:
        for qtype in unknown:
            await query_wire(server, make_query(f"t{qtype}.count.test.", qtype).to_wire())
        for name in known:
            await query(server, "k.count.test.", name)
        await query(server, "n.count.test.", "NAPTR")  # assigned, but not monitored
        assert server.config is not None
        state = server.config.shared["prometheus.state"]
        assert isinstance(state, MetricsState)
        rows = len(state.counters.rows) + len(state.counters.hot)
        found, _ = await scrape(server)
    req = "coredns_dns_requests_total"
    common = {"server": SERVER, "zone": "count.test.", "view": "", "proto": "udp", "family": "1"}
    assert value(found, req, type="other", **common) == len(unknown) + 1
    for name in known:
        assert value(found, req, type=name, **common) == 1
    types = {dict(k[1])["type"] for k in found if k[0] == req}
    assert types == {"other", *known}
    # One row per label combination, not per query type asked.
    assert rows <= 2 * len(types), rows
    assert len([k for k in found if k[0] == req]) == len(types)


def _rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


QUESTION_HEAD = bytes.fromhex("1234 0100 0001 0000 0000 0000") + b"\x01t\x07nowhere\x00"
"""A query's header and name (``t.nowhere.``, a zone not served: REFUSED, counted under
the ``dropped`` zone at once), the type and class to follow."""


def _ask_many_types(port: int, qtypes: range, deadline: float) -> int:
    """One query per type, a window of 64 in flight, lost ones not retried; the answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.connect(("127.0.0.1", port))
    sock.settimeout(0.5)
    pending = answered = 0
    todo = list(qtypes)
    try:
        while (todo or pending) and time.monotonic() < deadline:
            while todo and pending < 64:
                sock.send(QUESTION_HEAD + struct.pack(">HH", todo.pop(), 1))
                pending += 1
            try:
                sock.recv(4096)
            except TimeoutError:
                pending = 0  # lost in flight: not asked again
                continue
            pending -= 1
            answered += 1
    finally:
        sock.close()
    return answered


def test_many_unknown_types_leave_the_servers_memory_flat(tmp_path: Path) -> None:
    # Before the rows were bounded, each type asked added about 800 bytes (20,000: ~16 MB)
    # and a scrape took half a second. The warm-up asks more distinct questions than the
    # server's parse memo keeps (16,384), so what follows measures the metrics alone.
    dns_port, metrics_port = free_port(), free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(
        f"count.test:{dns_port} {{\n    bind 127.0.0.1\n"
        f"    prometheus 127.0.0.1:{metrics_port}\n    whoami\n}}\n"
    )
    with ServerProcess(["-conf", str(conf)]) as srv:
        srv.wait_for("pycorefile-")
        assert srv.proc is not None
        deadline = time.monotonic() + 60
        warmed = _ask_many_types(dns_port, range(1000, 19000), deadline)
        scrape_text(metrics_port)
        before = _rss_kb(srv.proc.pid)
        answered = _ask_many_types(dns_port, range(19000, 39000), deadline)
        text = scrape_text(metrics_port)
        after = _rss_kb(srv.proc.pid)
    assert answered > 15000, answered
    found, _ = samples(text)
    requests = {k: v for k, v in found.items() if k[0] == "coredns_dns_requests_total"}
    assert {(dict(k[1])["zone"], dict(k[1])["type"]) for k in requests} == {("dropped", "other")}
    assert sum(requests.values()) >= warmed + answered
    assert after - before < 6 * 1024, (before, after)


def scrape_text(port: int, accept: str = "") -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", "/metrics", headers={"Accept": accept} if accept else {})
        return conn.getresponse().read().decode()
    finally:
        conn.close()


# -- Histogram bounds written as CoreDNS (Go) writes them ---------------------------------

DURATION_LES = [
    "0.00025", "0.0005", "0.001", "0.002", "0.004", "0.008", "0.016", "0.032", "0.064",
    "0.128", "0.256", "0.512", "1.024", "2.048", "4.096", "8.192", "+Inf",
]  # fmt: skip
SIZE_LES = [
    "0", "100", "200", "300", "400", "511", "1023", "2047", "4095", "8291",
    "16000", "32000", "48000", "64000", "+Inf",
]  # fmt: skip


def bucket_bounds(text: str, family: str) -> list[str]:
    """The ``le`` values of a family's first series, in the order written, from the raw text."""
    les: list[str] = []
    first_series = None
    for line in text.splitlines():
        if not line.startswith(family + "_bucket{"):
            continue
        labels = line[line.index("{") + 1 : line.rindex("}")]
        series = re.sub(r',?le="[^"]*"', "", labels)
        if first_series is None:
            first_series = series
        if series == first_series:
            found = re.search(r'le="([^"]*)"', labels)
            assert found is not None
            les.append(found.group(1))
    return les


async def test_bucket_bounds_read_as_coredns_writes_them() -> None:
    up = Upstream(records={("a.example.", "A"): ["192.0.2.1"]}, host="127.0.0.2")
    reg = Registry.from_classes(
        {"bind": BindPlugin, "prometheus": PrometheusPlugin, "forward": ForwardPlugin}
    )
    async with up.running():
        text = (
            f"example:0 {{\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n forward . {up.address}\n}}\n"
        )
        async with open_server(text, registry=reg) as server:
            reply = await query(server, "a.example.", "A")
            address = server.http_address("127.0.0.1", 0)
            plain = (await http_get(address, "/metrics"))[2].decode()
            accept = "application/openmetrics-text;version=1.0.0"
            om = (await http_get(address, "/metrics", accept))[2].decode()
    assert reply.rcode() == dns.rcode.NOERROR
    # Text format, as client_golang: strconv.FormatFloat(le, 'g', -1, 64).
    assert bucket_bounds(plain, "coredns_dns_request_duration_seconds") == DURATION_LES
    assert bucket_bounds(plain, "coredns_dns_request_size_bytes") == SIZE_LES
    assert bucket_bounds(plain, "coredns_dns_response_size_bytes") == SIZE_LES
    assert bucket_bounds(plain, "coredns_forward_request_duration_seconds") == DURATION_LES
    assert bucket_bounds(plain, "coredns_proxy_request_duration_seconds") == DURATION_LES
    assert 'le="100.0"' not in plain and 'le="16000"' in plain
    # OpenMetrics, as client_golang writes it there: integers get ".0".
    om_sizes = [le if le == "+Inf" else f"{le}.0" for le in SIZE_LES]
    assert bucket_bounds(om, "coredns_dns_request_size_bytes") == om_sizes
    assert bucket_bounds(om, "coredns_dns_request_duration_seconds") == DURATION_LES
    assert bucket_bounds(om, "coredns_forward_request_duration_seconds") == DURATION_LES
    names = {f.name for f in openmetrics_families(om)}  # type: ignore[no-untyped-call]
    assert "coredns_dns_request_size_bytes" in names
