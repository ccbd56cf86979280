"""DNS capture for real, each test in its own network namespace (root, loopback only).

pycorefile runs as a dedicated uid on 127.0.0.1 and ::1 port 15053, answering
``mesh.test`` itself (meshhosts for a mesh name; whoami for the rest: the client's
address and an SRV naming the transport) and forwarding everything else to a dnsmasq on
127.0.0.2:53. A stub resolver configured with
``nameserver 127.0.0.1`` (port 53, where nothing listens) must get pycorefile's answers once
capture is installed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._netns import (
    PROXY_GID,
    PROXY_PORT,
    PROXY_UID,
    NetNS,
    as_proxy_user,
    require_namespaces,
)

pytestmark = pytest.mark.namespace

# Answers every name itself: enough where nothing is forwarded.
COREFILE = f"""\
.:{PROXY_PORT} {{
    bind 127.0.0.1 ::1
    whoami
}}
"""
# Answers mesh.test itself (a mesh name from meshhosts, whoami for the rest) and
# forwards every other name to the test upstream.
FORWARDING_COREFILE = f"""\
mesh.test:{PROXY_PORT} {{
    bind 127.0.0.1 ::1
    meshhosts {{
        10.1.2.3 web.mesh.test
        fd00::3 web.mesh.test
        fallthrough
    }}
    whoami
}}
.:{PROXY_PORT} {{
    bind 127.0.0.1 ::1
    forward . 127.0.0.2:53
}}
"""

EXCLUDE = ("--uid", str(PROXY_UID))


@pytest.fixture
def ns(tmp_path: Path) -> Iterator[NetNS]:
    require_namespaces()
    with NetNS(tmp_path) as namespace:
        yield namespace


def srv_transport(dig_output: str) -> str | None:
    """Which transport whoami saw: "udp" or "tcp" from its ``_udp.``/``_tcp.`` SRV owner."""
    for proto in ("udp", "tcp"):
        if f"_{proto}.whoami.mesh.test." in dig_output:
            return proto
    return None


def test_the_proxy_user_runs_the_tests_python_with_no_privilege(ns: NetNS) -> None:
    # The same interpreter and packages as the tests (even from a virtualenv whose base
    # lives in a private home), as the dedicated uid and gid, with no capability at all.
    script = (
        "import os, sys, trio; print(sys.version); print(os.getuid(), os.getgid(), "
        "os.getgroups()); print(open('/proc/self/status').read())"
    )
    done = ns.run(*as_proxy_user([sys.executable, "-c", script]))
    version, ids, status = done.stdout.split("\n", 2)
    assert version == sys.version
    assert ids == f"{PROXY_UID} {PROXY_GID} []"
    caps = dict(line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))
    assert caps["CapEff"] == caps["CapPrm"] == caps["CapAmb"] == "0" * 16


def test_stub_resolver_gets_pycorefile_answers_once_captured(ns: NetNS) -> None:
    ns.start_dnsmasq()
    ns.start_pycorefile(FORWARDING_COREFILE)

    # Control: nothing listens on port 53 of 127.0.0.1, so before capture the stub fails.
    assert srv_transport(ns.dig("127.0.0.1", 53, "whoami.mesh.test")) is None

    installed = ns.capture("install", *EXCLUDE)
    assert "table inet pycorefile" in installed.stdout

    # dig as root, to port 53: answered by pycorefile, over UDP and over TCP, IPv4 and IPv6.
    assert srv_transport(ns.dig("127.0.0.1", 53, "whoami.mesh.test")) == "udp"
    assert srv_transport(ns.dig("127.0.0.1", 53, "whoami.mesh.test", "+tcp")) == "tcp"
    assert srv_transport(ns.dig("::1", 53, "whoami.mesh.test")) == "udp"
    assert srv_transport(ns.dig("::1", 53, "whoami.mesh.test", "+tcp")) == "tcp"
    # Any destination is captured, not only the resolv.conf name server.
    assert srv_transport(ns.dig("127.0.0.2", 53, "whoami.mesh.test")) == "udp"

    # glibc's stub resolver (resolv.conf: nameserver 127.0.0.1, port 53) gets the mesh
    # answers, A and AAAA.
    mesh = ns.run("getent", "ahosts", "web.mesh.test").stdout.split()
    assert "10.1.2.3" in mesh and "fd00::3" in mesh

    # Other names: glibc -> (captured) pycorefile -> forward -> dnsmasq on 127.0.0.2:53.
    # Nothing listens on 127.0.0.1:53, so the only way to dnsmasq is pycorefile's forward,
    # and that query must escape capture (uid 15053): were it captured, it would come back
    # to pycorefile itself and never reach dnsmasq.
    assert "www.external.test" not in ns.log("dnsmasq.log")
    hosts = ns.run("getent", "hosts", "www.external.test")
    assert hosts.stdout.split()[:2] == ["192.0.2.9", "www.external.test"]
    assert "query[A] www.external.test from 127.0.0.1" in ns.log("dnsmasq.log")

    status = ns.capture("status", check=False)
    assert status.returncode == 0, status.stdout
    assert "[::1]:15053 UDP: answering" in status.stdout
    assert "127.0.0.1:15053 UDP: answering" in status.stdout
    assert "[::1]:15053 TCP: answering" in status.stdout
    assert f"uid {PROXY_UID}, gid {PROXY_GID}" in status.stdout


def test_status_says_plainly_when_pycorefile_is_down(ns: NetNS) -> None:
    proxy = ns.start_pycorefile(COREFILE)
    ns.capture("install", *EXCLUDE)
    proxy.kill()
    proxy.wait(timeout=10)

    status = ns.capture("status", check=False)
    assert status.returncode == 1, status.stdout
    assert "127.0.0.1:15053 UDP: NOT answering (connection refused" in status.stdout
    assert "captured DNS queries FAIL" in status.stdout
    # Fail closed: the captured query fails at once (refused), it does not bypass.
    failed = ns.dig("127.0.0.1", 53, "whoami.mesh.test")
    assert srv_transport(failed) is None
    assert "connection refused" in failed


def test_status_when_not_installed(ns: NetNS) -> None:
    status = ns.capture("status", check=False)
    assert status.returncode == 2, status.stdout
    assert "not installed" in status.stdout
    assert "127.0.0.1:15053 UDP: NOT answering" in status.stdout


def test_status_without_privilege_still_tests_the_proxy(ns: NetNS) -> None:
    ns.start_pycorefile(COREFILE)
    ns.capture("install", *EXCLUDE)
    status = ns.run(
        *as_proxy_user([sys.executable, "-m", "pycorefile", "capture", "status"]), check=False
    )
    assert status.returncode == 3, status.stdout
    assert "cannot read the nft rules" in status.stdout
    assert "127.0.0.1:15053 UDP: answering" in status.stdout


def test_status_warns_of_a_loop_when_pycorefile_is_not_excluded(ns: NetNS) -> None:
    ns.start_pycorefile(COREFILE)
    ns.capture("install", "--uid", str(PROXY_UID + 1))
    status = ns.capture("status", check=False)
    assert status.returncode == 1, status.stdout
    assert "is not excluded from capture" in status.stdout
    assert "loop" in status.stdout


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_install_twice_is_idempotent_and_remove_is_exact(ns: NetNS, backend: str) -> None:
    # Rules someone else owns, in both worlds, which capture must leave exactly as found.
    ns.run("nft", "add", "table", "inet", "other")
    ns.run("nft", "add", "chain", "inet", "other", "out", "{ type filter hook output priority 0; }")
    ns.run("nft", "add", "rule", "inet", "other", "out", "tcp", "dport", "9", "drop")
    ns.run(
        "iptables",
        "-t",
        "nat",
        "-A",
        "OUTPUT",
        "-d",
        "127.0.0.11",
        "-p",
        "udp",
        "--dport",
        "53",
        "-j",
        "DNAT",
        "--to-destination",
        "127.0.0.11:5353",
    )
    ns.run("ip6tables", "-A", "OUTPUT", "-p", "tcp", "--dport", "7", "-j", "REJECT")
    before = ns.rules()

    ns.capture("install", "--backend", backend, *EXCLUDE, "--gid", str(PROXY_GID))
    once = ns.rules()
    assert once != before
    ns.capture("install", "--backend", backend, *EXCLUDE, "--gid", str(PROXY_GID))
    assert ns.rules() == once

    removed = ns.capture("remove")
    assert "removed" in removed.stdout
    assert ns.rules() == before
    again = ns.capture("remove")
    assert "nothing to remove" in again.stdout
    assert ns.rules() == before


@pytest.mark.parametrize("backend", ["nft", "iptables"])
def test_remove_is_exact_in_a_namespace_without_rules(ns: NetNS, backend: str) -> None:
    before = ns.rules()
    ns.capture("install", "--backend", backend, *EXCLUDE)
    assert ns.rules() != before
    ns.capture("remove")
    assert ns.rules() == before


def test_iptables_backend_captures_too(ns: NetNS) -> None:
    ns.start_pycorefile(COREFILE)
    ns.capture("install", "--backend", "iptables", *EXCLUDE)
    assert srv_transport(ns.dig("127.0.0.1", 53, "whoami.mesh.test")) == "udp"
    assert srv_transport(ns.dig("::1", 53, "whoami.mesh.test", "+tcp")) == "tcp"
    status = ns.capture("status", check=False)
    assert status.returncode == 0, status.stdout
    assert "iptables nat chain PYCOREFILE_OUTPUT" in status.stdout


def test_only_resolv_conf_captures_only_the_name_servers(ns: NetNS) -> None:
    ns.start_dnsmasq()
    ns.start_pycorefile(COREFILE)
    ns.capture("install", "--only-resolv-conf", *EXCLUDE)
    # resolv.conf names 127.0.0.1: captured.
    assert srv_transport(ns.dig("127.0.0.1", 53, "whoami.mesh.test")) == "udp"
    # 127.0.0.2 is not a name server of resolv.conf: dnsmasq answers directly, and it
    # knows nothing of mesh.test.
    direct = ns.dig("127.0.0.2", 53, "whoami.mesh.test")
    assert srv_transport(direct) is None
    assert "query[A] whoami.mesh.test from 127.0.0.1" in ns.log("dnsmasq.log")


def test_install_replaces_earlier_options_atomically(ns: NetNS) -> None:
    ns.capture("install", "--only-resolv-conf", *EXCLUDE)
    narrow = ns.rules()
    ns.capture("install", *EXCLUDE)
    wide = ns.rules()
    assert "ip daddr 127.0.0.1" in narrow
    assert "ip daddr" not in wide
    assert wide.count("table inet pycorefile") == 1


def test_wait_proxy_installs_nothing_when_pycorefile_never_answers(ns: NetNS) -> None:
    before = ns.rules()
    done = ns.capture("install", *EXCLUDE, "--wait-proxy", "1", check=False)
    assert done.returncode == 1
    assert "did not answer on 127.0.0.1:15053 within 1 s" in done.stderr
    assert ns.rules() == before


def test_wait_proxy_installs_once_pycorefile_answers(ns: NetNS) -> None:
    ns.start_pycorefile(COREFILE)
    done = ns.capture("install", *EXCLUDE, "--wait-proxy", "5")
    assert "table inet pycorefile" in done.stdout
    assert "does not answer" not in done.stdout
