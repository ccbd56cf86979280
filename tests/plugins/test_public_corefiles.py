"""Public Corefiles that loop, loadbalance and bufsize unlock, validated and served.

The NodeLocal DNSCache Corefile (kubernetes/kubernetes,
``cluster/addons/dns/nodelocaldns/nodelocaldns.yaml``) and kubeadm's default
Corefile (``cmd/kubeadm/app/phases/addons/dns/manifests.go``) without its
``kubernetes`` block (which needs a cluster). ``-validate`` reads them as written, with the
NodeLocal placeholders filled in as the node-cache does; to serve them here,
only addresses are changed: listen addresses and HTTP endpoints go to
loopback addresses and free ports, and upstreams to test name servers. (k3s's
Corefile also needs ``hosts``: tested with that plugin.)
"""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from pathlib import Path

import dns.rcode
import trio

from pycorefile import Server
from pycorefile.testing import Upstream, query, scrape, serve
from pycorefile_plugins.loop import LoopPlugin
from tests.plugins.test_health_ready import http_get
from tests.process import run_cli

NODELOCAL = """\
__PILLAR__DNS__DOMAIN__:53 {
    errors
    cache {
            success 9984 30
            denial 9984 5
    }
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    health __PILLAR__LOCAL__DNS__:8080
    }
in-addr.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
ip6.arpa:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__CLUSTER__DNS__ {
            force_tcp
    }
    prometheus :9253
    }
.:53 {
    errors
    cache 30
    reload
    loop
    bind __PILLAR__LOCAL__DNS__ __PILLAR__DNS__SERVER__
    forward . __PILLAR__UPSTREAM__SERVERS__
    prometheus :9253
    }
"""

KUBEADM = """\
.:53 {
    errors
    health {
       lameduck 5s
    }
    ready
    kubernetes cluster.local in-addr.arpa ip6.arpa {
       pods insecure
       fallthrough in-addr.arpa ip6.arpa
       ttl 30
    }
    prometheus :9153
    forward . /etc/resolv.conf {
       max_concurrent 1000
    }
    cache 30 {
       disable success cluster.local
       disable denial cluster.local
    }
    loop
    reload
    loadbalance
}
"""
KUBERNETES_LINES = slice(6, 11)
"""The ``kubernetes`` directive and its block, lines 7-11."""


def fill(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(f"__PILLAR__{name}__", value)
    assert "__PILLAR__" not in text
    return text


def without_kubernetes(text: str) -> str:
    lines = text.splitlines(keepends=True)
    assert lines[KUBERNETES_LINES][0].strip().startswith("kubernetes ")
    del lines[KUBERNETES_LINES]
    return "".join(lines)


def validate(tmp_path: Path, text: str) -> tuple[int, str, str]:
    conf = tmp_path / "Corefile"
    conf.write_text(text)
    out = run_cli("-conf", str(conf), "-validate")
    return out.returncode, out.stdout, out.stderr


# -- -validate, as written ----------------------------------------------------------------


def test_nodelocal_dnscache_corefile_validates(tmp_path: Path) -> None:
    text = fill(
        NODELOCAL,
        {
            "DNS__DOMAIN": "cluster.local",
            "LOCAL__DNS": "169.254.20.10",
            "DNS__SERVER": "10.96.0.10",
            "CLUSTER__DNS": "10.96.0.11",
            "UPSTREAM__SERVERS": "/etc/resolv.conf",
        },
    )
    code, stdout, stderr = validate(tmp_path, text)
    assert code == 0, stderr
    chains = dict(line.split(" ", 1) for line in stdout.splitlines())
    assert chains["dns://cluster.local.:53"] == (
        "reload bind health prometheus errors cache loop forward"
    )
    assert chains["dns://.:53"] == "reload bind prometheus errors cache loop forward"
    assert set(chains) == {
        "dns://cluster.local.:53",
        "dns://in-addr.arpa.:53",
        "dns://ip6.arpa.:53",
        "dns://.:53",
    }


def test_kubeadm_default_corefile_needs_only_a_cluster(tmp_path: Path) -> None:
    # Every directive is known; outside a pod, kubernetes has no API to reach (its
    # in-cluster settings), which is the only error. (tests/plugins/test_kubernetes_corefiles.py
    # sets the same Corefile up with a pod's environment.)
    code, _stdout, stderr = validate(tmp_path, KUBEADM)
    assert code == 1
    assert f"{tmp_path / 'Corefile'}:7:5 - plugin/kubernetes: not running in a cluster" in stderr
    code, stdout, stderr = validate(tmp_path, without_kubernetes(KUBEADM))
    assert code == 0, stderr
    assert stdout.splitlines() == [
        "dns://.:53 reload ready health prometheus errors loadbalance cache loop forward"
    ]


# -- Served -----------------------------------------------------------------------------------


def served(text: str) -> str:
    """The Corefile with its ports left to the test server (one free port for all
    keys) and its HTTP endpoints on a loopback address."""
    text = re.sub(r":53 \{", " {", text)
    text = re.sub(r"(prometheus|health|ready) :\d+", r"\1 127.0.0.10:0", text)
    return text


async def test_nodelocal_dnscache_corefile_serves(tmp_path: Path) -> None:
    cluster_dns = Upstream(
        records={
            ("kubernetes.default.svc.cluster.local.", "A"): ["10.96.0.1"],
            ("1.0.96.10.in-addr.arpa.", "PTR"): ["kubernetes.default.svc.cluster.local."],
        },
        host="127.0.0.2",
    )
    upstream_servers = Upstream(records={("www.example.", "A"): ["192.0.2.1"]}, host="127.0.0.3")
    async with cluster_dns.running(), upstream_servers.running():
        text = fill(
            NODELOCAL,
            {
                "DNS__DOMAIN": "cluster.local",
                "LOCAL__DNS": "127.0.0.10",
                "DNS__SERVER": "127.0.0.11",
                "CLUSTER__DNS": cluster_dns.address,
                "UPSTREAM__SERVERS": upstream_servers.address,
            },
        )
        text = served(text).replace("health 127.0.0.10:8080", "health 127.0.0.10:0")
        async with serve(text) as server:
            port = server.port()
            loops = loop_plugins(server)
            assert len(loops) == 4
            with trio.fail_after(10):
                while any(p.probe.armed for p in loops):
                    await trio.sleep(0.05)
            replies = [
                await query(("127.0.0.10", port), "kubernetes.default.svc.cluster.local", "A"),
                await query(("127.0.0.11", port), "kubernetes.default.svc.cluster.local", "A"),
                await query(("127.0.0.11", port), "1.0.96.10.in-addr.arpa", "PTR"),
                await query(("127.0.0.10", port), "www.example", "A"),
                await query(("127.0.0.10", port), "nothing.cluster.local", "A"),
            ]
            status, body = await http_get(server.http_address("127.0.0.10", 0), "/health")
            metrics = await scrape(server, "127.0.0.10:0")
            assert all(p.loop_error is None for p in loops)
    assert [r.rcode() for r in replies] == [dns.rcode.NOERROR] * 4 + [dns.rcode.NXDOMAIN]
    assert [str(r.answer[0][0]) for r in replies[:4]] == [
        "10.96.0.1",
        "10.96.0.1",
        "kubernetes.default.svc.cluster.local.",
        "192.0.2.1",
    ]
    assert (status, body) == (200, b"OK")
    assert metrics.value("coredns_dns_requests_total") >= 5
    # force_tcp: the cluster DNS is asked over TCP, once per name (the cache answers again).
    asked = Counter((name, proto) for name, t, proto in cluster_dns.queries if t != "HINFO")
    assert asked == {
        ("kubernetes.default.svc.cluster.local.", "tcp"): 1,
        ("1.0.96.10.in-addr.arpa.", "tcp"): 1,
        ("nothing.cluster.local.", "tcp"): 1,
    }
    # One loop probe per block, each through that block's forward, and no loop.
    probes = [name for name, t, _ in cluster_dns.queries if t == "HINFO"]
    assert sorted(name.split(".", 2)[2] for name in probes) == [
        "cluster.local.",
        "in-addr.arpa.",
        "ip6.arpa.",
    ]
    assert [t for _n, t, _p in upstream_servers.queries].count("HINFO") == 1


def loop_plugins(server: Server) -> list[LoopPlugin]:
    assert server.config is not None
    found = server.config.find("loop")
    assert all(isinstance(p, LoopPlugin) for p in found)
    return found  # type: ignore[return-value]


async def test_kubeadm_default_corefile_without_kubernetes_serves(tmp_path: Path) -> None:
    # resolv.conf nameservers are on port 53: a loopback address of our own.
    host = f"127.53.{os.getpid() % 250 + 1}.{int(time.time() * 1000) % 250 + 1}"
    addresses = ["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]
    up = Upstream(
        records={
            ("www.example.", "A"): addresses,
            ("svc.cluster.local.", "A"): ["10.96.0.1"],
        },
        host=host,
        port=53,
    )
    resolv = tmp_path / "resolv.conf"
    resolv.write_text(f"nameserver {host}\noptions ndots:5\n")
    text = served(without_kubernetes(KUBEADM)).replace("/etc/resolv.conf", str(resolv))
    text = text.replace("    errors\n", "    bind 127.0.0.10\n    errors\n", 1)
    text = text.replace("    health {", "    health 127.0.0.10:0 {").replace(
        "    ready\n", "    ready 127.0.0.10:0\n"
    )
    async with up.running(), serve(text) as server:
        assert server.config is not None
        assert server.config.blocks[0].known_by == "cache"  # loadbalance keeps the fast path
        (loop,) = loop_plugins(server)
        with trio.fail_after(10):
            while loop.probe.armed:
                await trio.sleep(0.05)
        port = server.port()
        replies = [await query(("127.0.0.10", port), "www.example", "A") for _ in range(80)]
        for _ in range(2):
            await query(("127.0.0.10", port), "svc.cluster.local", "A")
        ready = await http_get(server.http_address("127.0.0.10", 0), "/ready")
    assert ready[0] == 200
    assert up.count("www.example.", "A") == 1  # cached
    assert up.count("svc.cluster.local.", "A") == 2  # cluster.local is not cached
    firsts = Counter(str(r.answer[0][0]) for r in replies)
    # loadbalance shuffles the cache hits: each address first about 20 times in 80.
    assert set(firsts) == set(addresses)
    assert loop.loop_error is None
