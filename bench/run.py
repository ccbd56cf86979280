"""Benchmark pycorefile beside dnsmasq (and dnslib's proxy) with dnsperf, on loopback.

    python bench/run.py                      # every scenario, 10 s per server
    python bench/run.py -s cache -d 5        # one scenario, 5 s per server

Each server under test is pinned to one core with taskset, dnsperf to the
other, and every scenario runs against pycorefile and its peers in the same
run: all of them are started, then measured in turns (``--rounds``, 2 by
default, splitting the duration), so a change in the machine's load during
the run falls on every server alike and the ratio stays meaningful on a
noisy machine. Results print as a Markdown table and, with --write, replace
the results section of docs/performance.md. All traffic stays on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# Re-exported: the other benchmark scripts import these from here too.
from common import (
    CLIENT_CORE,
    MESH_SERVICES,
    ROOT,
    SEARCH,
    SERVER_CORE,
    UPSTREAM_NAMES,
    Data,
    Upstream,
    cpu_seconds,
    free_port,
    need,
    peak_rss_mb,
    process,
    pycorefile_process,
    upstream,
    wait_answering,
    write_between_markers,
)
from common import dnsperf as run_dnsperf

WARM_UP_LIMIT = 60.0
"""Seconds a warm-up (the query file once through) may take at most."""

# -- Test data -------------------------------------------------------------------------


def cache_queries(turn: int = 0) -> list[str]:
    return [f"name{i}.bench.test A" for i in range(UPSTREAM_NAMES)]


def mesh_queries(turn: int = 0) -> list[str]:
    return [f"svc{i}.ns{i % 10 + 1}.svc.cluster.local A" for i in range(MESH_SERVICES)]


def autopath_queries(turn: int = 0) -> list[str]:
    # `svcN.nsM` looked up from ns1: the stub's first try is NAME.ns1.svc.cluster.local.
    return [
        f"svc{i}.ns{i % 10 + 1}.ns1.svc.cluster.local A"
        for i in range(0, MESH_SERVICES, 7)
        if i % 10 + 1 != 1
    ]


def miss_queries(turn: int = 0, count: int = 200_000) -> list[str]:
    """Names no server has seen: a fresh set each round."""
    return [f"r{i}.t{turn}.miss.bench.test A" for i in range(count)]


def sidecar_queries(turn: int = 0) -> list[str]:
    """An ndots:5 client with autopath: first search-expanded tries, A and AAAA."""
    out = []
    for i in range(3000):
        ns = f"ns{i % 10 + 1}"
        if i % 4 == 3:
            base = f"www{i % 200}.ext.bench.test"
        elif ns == "ns1":
            base = f"svc{i}"
        else:
            base = f"svc{i}.{ns}"
        out += [f"{base}.{SEARCH[0]} A", f"{base}.{SEARCH[0]} AAAA"]
    return out


# -- Servers ---------------------------------------------------------------------------


def pycorefile_corefile(
    scenario: str, port: int, up: int, data: Data, metrics: int, api_url: str = ""
) -> str:
    # Authoritative for cluster.local, as the cluster DNS is: unknown names there
    # get NXDOMAIN with an SOA from the table; other names go to forward.
    mesh = (
        f"    meshhosts cluster.local {{\n        file {data.mesh_table}\n"
        f"        namespace ns1\n        reload 0\n    }}\n"
    )
    common = f"    bind 127.0.0.1\n    prometheus 127.0.0.1:{metrics}\n"
    forward = f"    forward . 127.0.0.1:{up}\n"
    body = {
        "cache": common + "    cache\n" + forward,
        "deployed": deployed_body(up, metrics),
        "cache+log": common + "    log\n    cache\n" + forward,
        "mesh": common + mesh,
        "autopath": common + f"    autopath {data.resolv}\n    cache\n" + mesh,
        "miss": common + "    cache\n" + forward,
        "sidecar": example_body(up, data, metrics, log=False),
        "sidecar+log": example_body(up, data, metrics, log=True),
        "kubernetes": common + kubernetes_body(api_url),
    }[scenario]
    return f".:{port} {{\n{body}}}\n"


def kubernetes_body(api_url: str) -> str:
    """The kubernetes plugin for cluster.local, synced from the API server at ``api_url``."""
    return (
        f"    kubernetes cluster.local {{\n        endpoint {api_url}\n"
        "        startup_timeout 120s\n    }\n"
    )


def deployed_body(up: int, metrics: int) -> str:
    """The Kubernetes addon's default Corefile, less kubernetes, loop and loadbalance.

    Its plugins and options as the addon writes them (cluster/addons/dns/coredns
    in kubernetes/kubernetes), on loopback ports; the upstream replaces
    /etc/resolv.conf.
    """
    return (
        "    bind 127.0.0.1\n"
        "    errors\n"
        f"    health 127.0.0.1:{free_port()} {{\n        lameduck 5s\n    }}\n"
        f"    ready 127.0.0.1:{free_port()}\n"
        f"    prometheus 127.0.0.1:{metrics}\n"
        f"    forward . 127.0.0.1:{up} {{\n        max_concurrent 1000\n    }}\n"
        "    cache 30\n"
        "    reload\n"
    )


def example_body(up: int, data: Data, metrics: int, log: bool) -> str:
    """Corefile.example's plugins and options (``log`` only when asked), on the bench's data.

    The mesh table replaces examples/mesh (namespace ns1; the search path is
    the bench's resolv.conf, not the host's), the upstream replaces
    /etc/resolv.conf, and autoalloc's endpoint shares the metrics address as
    it does in the example.
    """
    log_line = "    log\n" if log else ""
    return (
        "    bind 127.0.0.1\n"
        "    errors\n"
        f"{log_line}"
        f"    health 127.0.0.1:{free_port()}\n"
        f"    ready 127.0.0.1:{free_port()}\n"
        f"    prometheus 127.0.0.1:{metrics}\n"
        "    autopath @meshhosts\n"
        "    cache\n"
        f"    autoalloc {{\n        http 127.0.0.1:{metrics}\n    }}\n"
        f"    meshhosts {{\n        file {data.mesh_table}\n        namespace ns1\n"
        f"        resolv_conf {data.resolv}\n        fallthrough\n    }}\n"
        f"    forward . 127.0.0.1:{up}\n"
    )


@contextmanager
def run_pycorefile(scenario: str, data: Data, up: Upstream) -> Iterator[tuple[int, int]]:
    port, metrics = free_port(), free_port()
    conf = data.dir / f"Corefile.{scenario}"
    with ExitStack() as stack:
        api_url = stack.enter_context(kube_api(data)) if scenario == "kubernetes" else ""
        text = pycorefile_corefile(scenario, port, up.port, data, metrics, api_url)
        proc = stack.enter_context(pycorefile_process(conf, text))
        if api_url:  # it answers once the first sync is done (at most startup_timeout)
            wait_answering(port, "svc1.ns2.svc.cluster.local", timeout=120)
        else:
            wait_answering(port)
        yield proc.pid, port


@contextmanager
def kube_api(data: Data) -> Iterator[str]:
    """A Kubernetes API server on loopback holding the mesh's Services; yields its URL.

    It is kmock's emulator as the tests run it (tests/plugins/kube_api.py), in a
    thread of this process, not of the server measured: the same 10,000
    Services (``svcN`` in ``nsM``, one ClusterIP each) as the mesh's hosts
    file, and their 10 namespaces. Once listed, it only keeps the watches open.
    """
    sys.path.insert(0, str(ROOT))
    from tests.plugins.kube_api import api_server, namespace, service

    http = [{"name": "http", "port": 80, "protocol": "TCP"}]

    services = []
    for line in data.mesh_hosts.read_text().splitlines():
        ip, host = line.split()
        name, ns = host.split(".")[:2]
        services.append(service(ns, name, [ip], http))
    namespaces = sorted({s["metadata"]["namespace"] for s in services})

    def fill(emulator: Any) -> None:
        for ns in namespaces:
            emulator.objects["v1/namespaces", None, ns] = namespace(ns)
        for s in services:
            meta = s["metadata"]
            emulator.objects["v1/services", meta["namespace"], meta["name"]] = s

    with api_server() as api:
        api.call(fill)
        yield api.url


@contextmanager
def run_dnsmasq(scenario: str, data: Data, up: Upstream) -> Iterator[tuple[int, int]]:
    port = free_port()
    args = [
        need("dnsmasq", "dnsmasq-base"),
        "--no-daemon",
        "--no-resolv",
        "--no-hosts",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        f"--port={port}",
        "--cache-size=10000",
        "--log-facility=/dev/null",
    ]
    if scenario in ("mesh", "autopath", "sidecar", "sidecar+log", "kubernetes"):
        args += [f"--addn-hosts={data.mesh_hosts}", "--local-ttl=30", "--local=/cluster.local/"]
    if scenario in ("cache", "deployed", "cache+log", "miss", "sidecar", "sidecar+log"):
        args += [f"--server=127.0.0.1#{up.port}"]
    if scenario.endswith("+log"):
        args += ["--log-queries"]
    with process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        wait_answering(
            port,
            "svc1.ns2.svc.cluster.local"
            if scenario in ("mesh", "kubernetes")
            else "name1.bench.test",
        )
        yield proc.pid, port


@contextmanager
def run_dnslib(scenario: str, data: Data, up: Upstream) -> Iterator[tuple[int, int]]:
    port = free_port()
    args = [
        sys.executable,
        "-m",
        "dnslib.proxy",
        "--port",
        str(port),
        "--address",
        "127.0.0.1",
        "--upstream",
        f"127.0.0.1:{up.port}",
        "--log",
        "error",
    ]
    with process(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) as proc:
        wait_answering(port)
        yield proc.pid, port


# -- Measuring -------------------------------------------------------------------------


@dataclass
class Result:
    server: str
    scenario: str
    qps: float
    avg_ms: float
    p50_ms: float
    p99_ms: float
    lost: int
    cpu_us: float
    rss_mb: float


@dataclass
class Tally:
    """What one server did over all its turns of a scenario."""

    completed: float = 0.0
    lost: int = 0
    seconds: float = 0.0
    latency_total: float = 0.0
    cpu: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def result(self, server: str, scenario: str, rss_mb: float) -> Result:
        completed = self.completed or 1
        p50 = p99 = 0.0
        if len(self.latencies) > 1:
            q = statistics.quantiles(self.latencies, n=100)
            p50, p99 = q[49], q[98]
        return Result(
            server,
            scenario,
            self.completed / self.seconds if self.seconds else 0.0,
            self.latency_total / completed * 1e3,
            p50 * 1e3,
            p99 * 1e3,
            self.lost,
            self.cpu / completed * 1e6,
            rss_mb,
        )


def dnsperf(port: int, queries: Path, seconds: float, tally: Tally | None = None) -> None:
    """Run dnsperf against ``port``; add what it measured to ``tally``.

    Without a tally it is a warm-up: the query file is sent once through (at
    most ``seconds``), so that every name of it has been asked before the
    measured turns, however slowly the first answers come.
    """
    run = run_dnsperf(port, queries, seconds, verbose=tally is not None, once=tally is None)
    if tally is None:
        return
    tally.latencies += run.latencies
    tally.lost += run.lost
    tally.completed += run.completed
    tally.seconds += run.completed / run.qps if run.qps else 0.0
    tally.latency_total += run.avg_latency * run.completed


Starter = Callable[[str, "Data", "Upstream"], AbstractContextManager[tuple[int, int]]]
"""Starts a server for a scenario; yields its (pid, port)."""


def measure(
    servers: list[tuple[str, Starter, float]],
    scenario: str,
    data: Data,
    up: Upstream,
    queries: Callable[[int], Path],
    rounds: int,
    warm: bool,
) -> list[Result]:
    """Start every server, then give each a turn of dnsperf per round, in order.

    ``servers`` is ``(name, starter, seconds per run)``; ``queries(round)`` is
    the query file of a round (a fresh one per round where answers must not
    be cached yet).
    """
    with ExitStack() as running:
        started = []
        for name, starter, seconds in servers:
            pid, port = running.enter_context(starter(scenario, data, up))
            if warm:
                dnsperf(port, queries(0), WARM_UP_LIMIT)
            started.append((name, pid, port, seconds, Tally()))
        for turn in range(rounds):
            for _name, pid, port, seconds, tally in started:
                before = cpu_seconds(pid)
                dnsperf(port, queries(turn), seconds / rounds, tally)
                tally.cpu += cpu_seconds(pid) - before
        return [
            tally.result(name, scenario, peak_rss_mb(pid)) for name, pid, _, _, tally in started
        ]


SCENARIOS = {
    # name: (description, queries, warm-up first, dnslib can run it)
    "cache": ("cache hits", cache_queries, True, True),
    "deployed": ("cache hits, Kubernetes default Corefile shape", cache_queries, True, False),
    "mesh": ("meshhosts answers, 10,000 Services", mesh_queries, False, False),
    "autopath": ("autopath answers for search-expanded mesh names", autopath_queries, True, False),
    "miss": ("cache misses forwarded to the upstream", miss_queries, False, True),
    "sidecar": ("sidecar mix: ndots:5 client, mesh and external", sidecar_queries, True, False),
    "sidecar+log": ("the sidecar mix with the log plugin on", sidecar_queries, True, False),
    "cache+log": ("cache hits with the log plugin on", cache_queries, True, False),
    # Warmed: the plugin prepares a name's reply when first asked (meshhosts, all at load).
    "kubernetes": ("kubernetes answers, 10,000 Services from the API", mesh_queries, True, False),
}


def table(results: list[Result]) -> str:
    rows = [
        "| scenario | server | qps | ratio | avg ms | p50 ms | p99 ms | lost | CPU µs/q "
        "| peak RSS MB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    peers = {(r.scenario): r for r in results if r.server == "dnsmasq"}
    for r in results:
        peer = peers.get(r.scenario)
        ratio = f"{r.qps / peer.qps:.2f}x" if peer and peer.qps and r.server != "dnsmasq" else ""
        rows.append(
            f"| {r.scenario} | {r.server} | {r.qps:,.0f} | {ratio} | {r.avg_ms:.3f} | "
            f"{r.p50_ms:.3f} | {r.p99_ms:.3f} | {r.lost} | {r.cpu_us:.1f} | {r.rss_mb:.0f} |"
        )
    return "\n".join(rows)


def write_doc(text: str) -> None:
    write_between_markers(ROOT / "docs" / "performance.md", "results", text, "Results")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "-s",
        "--scenario",
        action="append",
        choices=list(SCENARIOS),
        help="scenario to run (repeatable; default all)",
    )
    parser.add_argument(
        "-d", "--duration", type=float, default=10.0, help="seconds per server and scenario"
    )
    parser.add_argument(
        "-r", "--rounds", type=int, default=2, help="turns the duration is split into"
    )
    parser.add_argument("--no-dnslib", action="store_true", help="skip dnslib's proxy")
    parser.add_argument("--write", action="store_true", help="update docs/performance.md")
    args = parser.parse_args()
    if (os.cpu_count() or 1) < 2:
        raise SystemExit("needs two cores: one for the server, one for dnsperf")
    need("taskset", "util-linux")
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="pycorefile-bench-") as tmp:
        data = Data(Path(tmp))
        with upstream(data) as up:
            for scenario in args.scenario or list(SCENARIOS):
                description, make_queries, warm, dnslib_ok = SCENARIOS[scenario]
                print(f"== {scenario}: {description}", file=sys.stderr)
                servers: list[tuple[str, Starter, float]] = [
                    ("pycorefile", run_pycorefile, args.duration),
                    ("dnsmasq", run_dnsmasq, args.duration),
                ]
                if dnslib_ok and not args.no_dnslib and _has_dnslib():
                    servers.append(("dnslib proxy", run_dnslib, min(args.duration, 5)))
                results += measure(
                    servers,
                    scenario,
                    data,
                    up,
                    data.query_rounds(scenario, make_queries),
                    args.rounds,
                    warm,
                )
    text = table(results)
    print(text)
    if args.write:
        header = (
            f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()}, "
            f"{os.cpu_count()} cores, "
            f"Python {platform.python_version()}; command: `python bench/run.py "
            f"-d {args.duration:g} -r {args.rounds} --write`. Server on core {SERVER_CORE}, "
            f"dnsperf (`-c 1 -q 100`) on core {CLIENT_CORE}, UDP on 127.0.0.1."
        )
        write_doc(header + "\n\n" + text)
    return 0


def _has_dnslib() -> bool:
    return importlib.util.find_spec("dnslib") is not None


if __name__ == "__main__":
    raise SystemExit(main())
