"""The k3s Corefile with its NodeHosts ``hosts`` block: validated by the command line and served.

k3s ships this Corefile (``manifests/coredns.yaml``) with a NodeHosts file of
``ADDRESS NODE-NAME`` lines that it rewrites as nodes come and go. The
``kubernetes`` block is left out (it needs a cluster), as are ``loop`` and
``loadbalance`` while they are not registered; ``/etc/resolv.conf`` and the
import globs point into the test's directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import dns.flags
import dns.rcode
import trio

from pycorefile._registry import Registry
from pycorefile.testing import Upstream, query, scrape, serve

from ..process import run_cli

K3S = """\
.:53 {
    errors
    health
    ready
    hosts NODEHOSTS {
      ttl 60
      reload 15s
      fallthrough
    }
    prometheus :9153
    forward . RESOLV
    cache 30
LATER
    reload
    import CUSTOM/*.override
}
import CUSTOM/*.server
"""


def k3s_corefile(tmp_path: Path, resolv: str) -> str:
    node_hosts = tmp_path / "NodeHosts"
    node_hosts.write_text("192.168.1.10 server-0\n192.168.1.11 agent-0\n")
    (tmp_path / "custom").mkdir(exist_ok=True)
    known = Registry.discover()
    later = "".join(f"    {name}\n" for name in ("loop", "loadbalance") if name in known)
    return (
        K3S.replace("NODEHOSTS", str(node_hosts))
        .replace("RESOLV", resolv)
        .replace("CUSTOM", str(tmp_path / "custom"))
        .replace("LATER\n", later)
    )


def test_validate(tmp_path: Path) -> None:
    conf = tmp_path / "Corefile"
    conf.write_text(k3s_corefile(tmp_path, "/etc/resolv.conf"))
    out = run_cli("-conf", str(conf), "-validate")
    assert out.returncode == 0, out.stderr
    [line] = [text for text in out.stdout.splitlines() if text.startswith("dns://")]
    chain = line.split()
    assert chain[0] == "dns://.:53"
    assert chain.index("cache") < chain.index("hosts") < chain.index("forward")


async def test_serve(tmp_path: Path) -> None:
    records = {("example.org.", "A"): ["192.0.2.1"]}
    async with Upstream(records=records, host="127.0.0.7").running() as up:
        resolv = tmp_path / "resolv.conf"
        resolv.write_text(f"nameserver 127.0.0.7:{up.port}\n")
        text = (
            k3s_corefile(tmp_path, up.address)
            .replace(".:53 {", ".:0 {")
            .replace("    health\n", "    health 127.0.0.1:0\n")
            .replace("prometheus :9153", "prometheus 127.0.0.1:0")
        )
        async with serve(text) as server:
            node = await query(server, "server-0", "A")
            assert node.rcode() == dns.rcode.NOERROR and node.flags & dns.flags.AA
            assert [(r.ttl, [rd.to_text() for rd in r]) for r in node.answer] == [
                (30, ["192.168.1.10"])  # hosts' ttl 60, capped by cache 30
            ]
            ptr = await query(server, "11.1.168.192.in-addr.arpa", "PTR")
            assert [rd.to_text() for rd in ptr.answer[0]] == ["agent-0."]
            # fallthrough: other names go to forward.
            other = await query(server, "example.org", "A")
            assert [rd.to_text() for rd in other.answer[0]] == ["192.0.2.1"]
            # A node joins: k3s rewrites NodeHosts. Its name was asked before (the
            # upstream's NXDOMAIN is in the cache); once the file is re-read (within
            # reload 15s: waited for on the entries gauge, bounded at 40 s) the
            # very next query is answered from the new table.
            node_hosts = tmp_path / "NodeHosts"
            before = await query(server, "agent-1", "A")
            assert before.rcode() == dns.rcode.NXDOMAIN
            metrics = await scrape(server)
            assert metrics.value("coredns_hosts_entries", hostsfile=str(node_hosts)) == 4
            new = tmp_path / "NodeHosts.new"
            new.write_text(node_hosts.read_text() + "192.168.1.12 agent-1\n")
            os.replace(new, node_hosts)
            with trio.move_on_after(40):
                while metrics.value("coredns_hosts_entries", hostsfile=str(node_hosts)) != 6:
                    await trio.sleep(0.5)
                    metrics = await scrape(server)
            reply = await query(server, "agent-1", "A")
            assert [rd.to_text() for r in reply.answer for rd in r] == ["192.168.1.12"]
