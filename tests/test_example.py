"""Corefile.example, as the README's first command runs it, inside a private network.

The example forwards non-mesh names to /etc/resolv.conf's servers; in a network
namespace of its own only loopback exists, so nothing can leave the machine
while the mesh answers, autoalloc, autopath and the endpoints are checked.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

INSIDE = r"""
import json, subprocess, sys, time, urllib.request
import dns.message, dns.query, dns.rcode

subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
server = subprocess.Popen([sys.executable, "-m", "pycorefile", "-conf", "Corefile.example"],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

def ask(name, rdtype="A", tcp=False):
    q = dns.message.make_query(name, rdtype)
    send = dns.query.tcp if tcp else dns.query.udp
    r = send(q, "127.0.0.1", port=1053, timeout=3)
    return {"rcode": dns.rcode.to_text(r.rcode()),
            "answer": [rr.to_text() for rrset in r.answer for rr in rrset],
            "names": [rrset.name.to_text() for rrset in r.answer]}

out = {}
try:
    deadline = time.monotonic() + 20
    while True:
        try:
            ask("productpage.default.svc.cluster.local")
            break
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    out["fqdn"] = ask("productpage.default.svc.cluster.local")
    out["short"] = ask("productpage", tcp=True)
    out["dual"] = ask("reviews.bookinfo.svc.cluster.local", "AAAA")
    out["alloc"] = ask("db.example.internal")
    out["explicit"] = ask("api.partner.example")
    out["ready"] = urllib.request.urlopen("http://127.0.0.1:8181/ready", timeout=3).status
    out["health"] = urllib.request.urlopen("http://127.0.0.1:8080/health", timeout=3).status
    metrics = urllib.request.urlopen("http://127.0.0.1:9153/metrics", timeout=3).read().decode()
    out["metrics"] = "coredns_dns_requests_total" in metrics
finally:
    server.terminate()
    out["exit"] = server.wait(timeout=15)
    out["log"] = server.stdout.read()
print(json.dumps(out))
"""


def test_corefile_example_answers_offline() -> None:
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        pytest.fail("needs unshare (util-linux) and ip (iproute2); .ci/run installs them")
    done = subprocess.run(
        ["unshare", "--net", sys.executable, "-c", INSIDE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.splitlines()[-1])
    assert out["fqdn"]["answer"] == ["10.96.10.10"]
    assert out["short"]["answer"] == ["10.96.10.10"] and out["short"]["names"] == ["productpage."]
    assert out["dual"]["answer"] == ["fd00:10:96::20"]
    assert out["alloc"]["answer"] == ["240.240.163.129"]  # its hashed pair
    assert out["explicit"]["answer"] == ["203.0.113.10"]
    assert out["ready"] == 200 and out["health"] == 200 and out["metrics"]
    assert out["exit"] == 0
    assert '"A IN productpage.default.svc.cluster.local. udp' in out["log"]  # the log plugin
