"""What the benchmark scripts share: tools, ports, test data, the servers, dnsperf.

Every server runs on 127.0.0.1; the server under test is pinned to core
``SERVER_CORE`` with taskset, the clients and the upstream to ``CLIENT_CORE``.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SERVER_CORE = "0"
CLIENT_CORE = "1"
MESH_SERVICES = 10_000
UPSTREAM_NAMES = 1_000
SEARCH = ["ns1.svc.cluster.local", "svc.cluster.local", "cluster.local"]


# -- Helpers -------------------------------------------------------------------------


def need(tool: str, package: str) -> str:
    """The path of ``tool``, installing its Debian package when it is missing."""
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if found:
        return found
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", package],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
    )
    found = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
    if not found:
        raise SystemExit(f"cannot find {tool} after installing {package}")
    return found


def free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = int(u.getsockname()[1])
            with socket.socket() as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port")


def wait_answering(port: int, name: str = "name1.bench.test", timeout: float = 20) -> None:
    """Wait until something answers DNS on 127.0.0.1:port."""
    import dns.message
    import dns.query

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            dns.query.udp(dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=0.3)
            return
        except Exception:
            time.sleep(0.1)
    raise RuntimeError(f"nothing answers on port {port}")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def rss_mb(pid: int) -> float:
    """Resident memory now (VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def open_fds(pid: int) -> int:
    """File descriptors the process has open now."""
    return len(os.listdir(f"/proc/{pid}/fd"))


@contextmanager
def process(args: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["taskset", "-c", SERVER_CORE, *args], **kwargs)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- Test data -------------------------------------------------------------------------


@dataclass
class Data:
    """Files shared by every scenario: hosts, mesh table, query streams."""

    dir: Path
    upstream_hosts: Path = field(init=False)
    mesh_table: Path = field(init=False)
    mesh_hosts: Path = field(init=False)
    resolv: Path = field(init=False)

    def __post_init__(self) -> None:
        d = self.dir
        self.upstream_hosts = d / "upstream.hosts"
        self.upstream_hosts.write_text(
            "".join(
                f"10.1.{i // 250}.{i % 250 + 1} name{i}.bench.test\n" for i in range(UPSTREAM_NAMES)
            )
        )
        table = {}
        lines = []
        for i in range(MESH_SERVICES):
            ns = f"ns{i % 10 + 1}"
            host = f"svc{i}.{ns}.svc.cluster.local"
            ip = f"10.96.{i // 250}.{i % 250 + 1}"
            table[host] = {
                "ips": [ip],
                "registry": "Kubernetes",
                "shortname": f"svc{i}",
                "namespace": ns,
            }
            lines.append(f"{ip} {host}\n")
        self.mesh_table = d / "mesh.json"
        self.mesh_table.write_text(json.dumps({"table": table}))
        self.mesh_hosts = d / "mesh.hosts"
        self.mesh_hosts.write_text("".join(lines))
        self.resolv = d / "resolv.conf"
        self.resolv.write_text(f"search {' '.join(SEARCH)}\noptions ndots:5\n")

    def queries(self, name: str, lines: list[str]) -> Path:
        path = self.dir / f"{name}.queries"
        path.write_text("".join(line + "\n" for line in lines))
        return path

    def query_rounds(
        self, scenario: str, make: Callable[[int], list[str]]
    ) -> Callable[[int], Path]:
        """The query file of each round, written once (``make(round)`` gives its lines)."""
        files: dict[int, Path] = {}

        def of_round(turn: int) -> Path:
            if turn not in files:
                files[turn] = self.queries(f"{scenario}.{turn}", make(turn))
            return files[turn]

        return of_round


# -- Servers ---------------------------------------------------------------------------


@dataclass
class Upstream:
    port: int
    proc: subprocess.Popen[bytes]


@contextmanager
def upstream(data: Data, query_log: Path | None = None) -> Iterator[Upstream]:
    """dnsmasq as the authoritative upstream (on the client core: it is not measured).

    cluster.local goes on to a second dnsmasq, authoritative for it, that
    knows the mesh's names as the cluster DNS a sidecar forwards to does: a
    chain whose meshhosts falls through (Corefile.example) asks it the names
    and types the table has not, and gets NXDOMAIN or NODATA with an SOA
    whose TTL is 30 s (the Kubernetes default Corefile's ``ttl 30``), so the
    answers are cached for as long as they would be in a cluster.

    With ``query_log``, every query the first dnsmasq receives is logged to
    that file.
    """
    cluster_port = free_port()
    with dnsmasq_upstream(
        f"--port={cluster_port}",
        f"--addn-hosts={data.mesh_hosts}",
        # Authoritative mode: an SOA in negative answers (dnsmasq's --local gives none).
        "--auth-server=ns.cluster.local,127.0.0.1",
        "--auth-zone=cluster.local",
        "--auth-ttl=30",
        check="svc1.ns2.svc.cluster.local",
    ):
        port = free_port()
        options = [
            f"--port={port}",
            f"--addn-hosts={data.upstream_hosts}",
            "--local-ttl=3600",
            "--neg-ttl=60",
            "--address=/miss.bench.test/192.0.2.1",
            "--address=/ext.bench.test/192.0.2.2",
            # Since dnsmasq 2.86 --address answers only A; --local makes other types NODATA.
            "--local=/miss.bench.test/",
            "--local=/ext.bench.test/",
            f"--server=/cluster.local/127.0.0.1#{cluster_port}",
        ]
        with dnsmasq_upstream(*options, query_log=query_log) as proc:
            yield Upstream(port, proc)


@contextmanager
def dnsmasq_upstream(
    *options: str, check: str = "name1.bench.test", query_log: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """dnsmasq on 127.0.0.1 with ``options`` (its --port among them), on the client core.

    It runs in the foreground but not in debug mode (``--no-daemon``): in
    debug mode it serves a TCP connection in its main process, so a forwarder
    keeping one open (as *forward* does, for ``expire``) would stop it
    answering anything. ``check`` is the name asked to know it answers; with
    ``query_log``, every query it receives is logged to that file.
    """
    args = [
        need("dnsmasq", "dnsmasq-base"),
        "--keep-in-foreground",
        f"--user={pwd.getpwuid(os.getuid()).pw_name}",  # the files here are ours only
        "--no-resolv",
        "--no-hosts",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--cache-size=0",
        f"--log-facility={query_log or '/dev/null'}",
        *options,
    ]
    if query_log:
        args.append("--log-queries")
    port = int(next(o for o in options if o.startswith("--port=")).split("=")[1])
    proc = subprocess.Popen(
        ["taskset", "-c", CLIENT_CORE, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_answering(port, check)
        yield proc
    finally:
        proc.terminate()
        proc.wait()


@contextmanager
def pycorefile_process(
    conf: Path,
    text: str,
    *,
    output: int | object = subprocess.DEVNULL,
    preexec_fn: Callable[[], None] | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """pycorefile serving ``text`` (written to ``conf``), on the server core.

    ``output`` takes its standard output and error (its log); ``preexec_fn``
    runs in the child before the server starts (e.g. to lower a limit).
    """
    conf.write_text(text)
    with process(
        [sys.executable, "-m", "pycorefile", "-conf", str(conf), "-quiet"],
        stdout=output,
        stderr=subprocess.STDOUT if output is not subprocess.DEVNULL else None,
        cwd=str(ROOT),
        preexec_fn=preexec_fn,
    ) as proc:
        yield proc


def still_answers(port: int) -> bool:
    """A mesh name and an upstream name, each answered with its address."""
    import dns.message
    import dns.query

    expected = {"svc1.ns2.svc.cluster.local": "10.96.0.2", "name5.bench.test": "10.1.0.6"}
    for name, address in expected.items():
        for _ in range(3):
            try:
                reply = dns.query.udp(
                    dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=2
                )
            except Exception:
                continue
            if [r.to_text() for rrset in reply.answer for r in rrset] == [address]:
                break
        else:
            return False
    return True


# -- dnsperf ---------------------------------------------------------------------------


@dataclass
class DnsperfRun:
    """What one dnsperf run reported."""

    sent: int = 0
    completed: int = 0
    lost: int = 0
    qps: float = 0.0
    avg_latency: float = 0.0
    """Seconds."""
    rcodes: dict[str, int] = field(default_factory=dict)
    """Replies by response code (``NOERROR``, ``SERVFAIL``, ...)."""
    latencies: list[float] = field(default_factory=list)
    """Seconds, one per answered query (verbose runs only)."""

    def quantiles(self) -> tuple[float, float, float]:
        """p50, p99 and the maximum latency in seconds (zeros without latencies)."""
        if len(self.latencies) < 2:
            return 0.0, 0.0, max(self.latencies, default=0.0)
        q = statistics.quantiles(self.latencies, n=100)
        return q[49], q[98], max(self.latencies)


def dnsperf(
    port: int,
    queries: Path,
    seconds: float,
    *,
    clients: int = 1,
    outstanding: int = 100,
    qps: float | None = None,
    verbose: bool = False,
    once: bool = False,
) -> DnsperfRun:
    """Run dnsperf against 127.0.0.1:``port`` on the client core (2 s timeout per query).

    ``qps`` paces it (``-Q``: an open loop below saturation); ``verbose``
    collects every answered query's latency; ``once`` sends the query file
    once through (``-n 1``), stopping early at ``seconds``.
    """
    args = ["taskset", "-c", CLIENT_CORE, need("dnsperf", "dnsperf"), "-s", "127.0.0.1",
            "-p", str(port), "-d", str(queries), "-l", str(seconds), "-c", str(clients),
            "-q", str(outstanding), "-t", "2"]  # fmt: skip
    if qps:
        args += ["-Q", str(int(qps))]
    if verbose:
        args.append("-v")
    if once:
        args += ["-n", "1"]
    out = subprocess.run(args, capture_output=True, text=True, timeout=seconds + 60).stdout
    run = DnsperfRun()
    statistics_seen = False
    for line in out.splitlines():
        words = line.split()
        if words[:1] == [">"]:
            # "> NOERROR name A 0.000123"; "> T name A": timed out, "> I": interrupted
            if len(words) > 1 and words[1] not in ("T", "I"):
                run.latencies.append(float(words[-1]))
        elif "Queries sent:" in line:
            run.sent = int(words[2])
        elif "Queries completed:" in line:
            run.completed = int(words[2])
            statistics_seen = True
        elif "Queries lost:" in line:
            run.lost = int(words[2])
        elif "Queries per second:" in line:
            run.qps = float(words[3])
        elif "Average Latency (s):" in line:
            run.avg_latency = float(words[3])
        elif "Response codes:" in line:
            # "Response codes:  NOERROR 34 (34.00%), NXDOMAIN 33 (33.00%)"
            for part in line.split(":", 1)[1].split(","):
                rcode, count = part.split()[:2]
                run.rcodes[rcode] = int(count)
    if not statistics_seen:
        raise SystemExit(f"dnsperf gave no statistics:\n{out[-2000:]}")
    return run


# -- Reports ---------------------------------------------------------------------------


def write_between_markers(doc: Path, name: str, body: str, heading: str) -> None:
    """Put ``body`` between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in ``doc``;
    without the markers, append them under ``heading``."""
    text = doc.read_text()
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    block = f"{begin}\n{body}\n{end}"
    if begin in text:
        head, _, rest = text.partition(begin)
        _, _, tail = rest.partition(end)
        doc.write_text(f"{head}{block}{tail}")
    else:
        doc.write_text(text + f"\n## {heading}\n\n{block}\n")
