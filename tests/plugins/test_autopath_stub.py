"""autopath with the system's own stub resolver: 2 queries instead of 12.

glibc's ``getaddrinfo`` (``getent ahosts``) runs in a private network and mount
namespace whose ``/etc/resolv.conf`` has ``ndots:5`` and five search domains
and points at pycorefile on 127.0.0.1:53 (autopath, cache, meshhosts, forward),
with dnsmasq on 127.0.0.2 as the upstream. The queries pycorefile receives are
counted from the log plugin's lines. Needs root (CI runs as root).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.capture._netns import NetNS, require_namespaces

pytestmark = pytest.mark.namespace

SEARCH = ["ns1.svc.cluster.local", "svc.cluster.local", "cluster.local", "example.internal",
          "corp.test"]  # fmt: skip
RESOLV_CONF = f"nameserver 127.0.0.1\nsearch {' '.join(SEARCH)}\noptions ndots:5\n"
UPSTREAM_PORT = 5300
TIMEOUT = 20.0
LOGGED = re.compile(r'"(A|AAAA) IN (\S+) (?:udp|tcp) ')

COREFILE = """\
.:53 {{
    bind 127.0.0.1
    log
    {autopath}
    cache
    meshhosts {{
        10.0.0.1 productpage.ns1.svc.cluster.local
        namespace ns1
        fallthrough
    }}
    forward . 127.0.0.2:{port}
}}
"""


@dataclass
class Lookup:
    """One ``getent ahosts`` run: its output and the queries pycorefile got for it."""

    output: str
    returncode: int
    queries: list[tuple[str, str]]

    @property
    def addresses(self) -> set[str]:
        return {line.split()[0] for line in self.output.splitlines() if line.strip()}


class StubBench:
    """dnsmasq and pycorefile in one namespace; lookups counted between log markers."""

    def __init__(self, ns: NetNS, autopath: bool) -> None:
        self.ns = ns
        self.markers = 0
        corefile = ns.tmp / "Corefile"
        corefile.write_text(
            COREFILE.format(autopath="autopath @meshhosts" if autopath else "", port=UPSTREAM_PORT)
        )
        ns.start(
            "dnsmasq", "--no-daemon", "--no-resolv", "--no-hosts",
            "--listen-address=127.0.0.2", "--bind-interfaces", f"--port={UPSTREAM_PORT}",
            # NXDOMAIN for every name but the one external host (NODATA for its AAAA).
            "--address=/#/", "--host-record=www.external.test,192.0.2.9", "--local-ttl=300",
            "--log-queries", "--log-facility=-", "--pid-file=", "--user=root",
            log="dnsmasq.log",
        )  # fmt: skip
        ns.wait_answer("127.0.0.2", UPSTREAM_PORT, "www.external.test", "192.0.2.9")
        self.upstream_log_start = len(ns.log("dnsmasq.log"))  # our readiness check is not counted
        self.server = ns.start(
            sys.executable, "-m", "pycorefile", "-conf", str(corefile), log="pycorefile.log"
        )
        ns.wait_answer("127.0.0.1", 53, "productpage.ns1.svc.cluster.local", "10.0.0.1",
                       self.server)  # fmt: skip
        self.mark()

    def mark(self) -> int:
        """Ask a marker name and wait until its log line is out; return the log's length."""
        self.markers += 1
        marker = f"marker-{self.markers}.invalid."
        self.ns.dig("127.0.0.1", 53, marker)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            text = self.ns.log("pycorefile.log")
            if marker in text:
                return len(text)
            if self.server.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no log line for {marker}:\n{self.ns.log('pycorefile.log')}")

    def lookup(self, name: str) -> Lookup:
        """``getent ahosts NAME`` and the (type, name) of each query pycorefile logged for it."""
        start = len(self.ns.log("pycorefile.log"))
        done = self.ns.run("getent", "ahosts", name, check=False)
        end = self.mark()
        lines = self.ns.log("pycorefile.log")[start:end].splitlines()
        queries = [
            (m.group(1), m.group(2))
            for m in map(LOGGED.search, lines)
            if m is not None and not m.group(2).startswith("marker-")
        ]
        return Lookup(done.stdout, done.returncode, queries)

    def upstream_asked(self, name: str, rdtype: str = "A") -> int:
        """How often pycorefile asked dnsmasq for ``name`` since it started."""
        text = self.ns.log("dnsmasq.log")[self.upstream_log_start :]
        return text.count(f"query[{rdtype}] {name} from")


@pytest.fixture(scope="module")
def with_autopath(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubBench]:
    require_namespaces()
    with NetNS(tmp_path_factory.mktemp("autopath"), RESOLV_CONF) as ns:
        yield StubBench(ns, autopath=True)


@pytest.fixture(scope="module")
def without_autopath(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StubBench]:
    require_namespaces()
    with NetNS(tmp_path_factory.mktemp("no-autopath"), RESOLV_CONF) as ns:
        yield StubBench(ns, autopath=False)


FIRST_TRY = "{}.ns1.svc.cluster.local."

LOOKUPS = [
    # (name given to getent, address expected)
    ("productpage.ns1.svc.cluster.local", "10.0.0.1"),
    ("productpage.ns1", "10.0.0.1"),
    ("productpage", "10.0.0.1"),
    ("www.external.test", "192.0.2.9"),
]


@pytest.mark.parametrize(("name", "address"), LOOKUPS)
def test_two_queries_with_autopath(with_autopath: StubBench, name: str, address: str) -> None:
    lookup = with_autopath.lookup(name)
    assert lookup.returncode == 0, lookup
    assert lookup.addresses == {address}
    # One A and one AAAA, both for the first search expansion, answered in full.
    first = FIRST_TRY.format(name)
    assert sorted(lookup.queries) == [("A", first), ("AAAA", first)]


def expected_search(name: str) -> list[tuple[str, str]]:
    """What glibc asks without help: A and AAAA for each search domain, then the name."""
    names = [f"{name}.{domain}." for domain in SEARCH] + [f"{name}."]
    return [(rdtype, n) for n in names for rdtype in ("A", "AAAA")]


@pytest.mark.parametrize(
    ("name", "address"),
    [("productpage.ns1.svc.cluster.local", "10.0.0.1"), ("www.external.test", "192.0.2.9")],
)
def test_twelve_queries_without_autopath(
    without_autopath: StubBench, name: str, address: str
) -> None:
    lookup = without_autopath.lookup(name)
    assert lookup.returncode == 0, lookup
    assert lookup.addresses == {address}
    assert len(lookup.queries) == 12
    assert sorted(lookup.queries) == sorted(expected_search(name))


def test_unknown_name_ends_in_nxdomain(with_autopath: StubBench) -> None:
    """Nothing exists: NXDOMAIN, and the client walks its own search list as before.

    (Those later queries are cache hits when the upstream's NXDOMAIN carries an
    SOA; this dnsmasq sends none, so nothing negative is cached here.)
    """
    lookup = with_autopath.lookup("nothere")
    assert lookup.returncode == 2, lookup
    assert lookup.output == ""
    assert sorted(lookup.queries) == sorted(expected_search("nothere"))


def test_repeat_reaches_upstream_once(with_autopath: StubBench) -> None:
    for _ in range(3):
        lookup = with_autopath.lookup("www.external.test")
        assert lookup.addresses == {"192.0.2.9"}
    # Any earlier test's lookup included: the answer's TTL (300 s) has not passed.
    assert with_autopath.upstream_asked("www.external.test", "A") == 1
    assert with_autopath.upstream_asked("www.external.test", "AAAA") <= 1


def test_namespace_tools_present() -> None:
    """The acceptance tests above need these; fail loudly rather than skip."""
    require_namespaces()
    for tool in ("getent", "dnsmasq"):
        assert subprocess.run(["which", tool], capture_output=True).returncode == 0, tool
    assert Path("/etc/resolv.conf").exists()
