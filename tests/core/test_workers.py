"""``-workers N``: processes sharing the DNS port, one parent in charge."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import dns.message
import dns.query
import dns.rcode

from pycorefile._workers import merge_metrics

from ..process import ServerProcess, free_port


def workers_of(parent: int) -> list[int]:
    out = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
            if ppid == parent:
                out.append(int(pid))
    return out


def ask(port: int, name: str, source: str = "127.0.0.1") -> dns.message.Message:
    return dns.query.udp(
        dns.message.make_query(name, "A"), "127.0.0.1", port=port, timeout=3, source=source
    )


def test_workers_share_the_port_restart_reload_and_stop(tmp_path: Path) -> None:
    port = free_port()
    conf = tmp_path / "Corefile"
    conf.write_text(f"example.org:{port} {{\n bind 127.0.0.1\n whoami\n}}\n")
    with ServerProcess(["-conf", str(conf), "-workers", "2"]) as srv:
        srv.wait_for("2 workers")
        assert srv.proc is not None
        children = workers_of(srv.proc.pid)
        assert len(children) == 2
        # Many client addresses, so the kernel's flow hash spreads them over both.
        for i in range(2, 30):
            reply = ask(port, "example.org", f"127.0.0.{i}")
            assert reply.additional[0][0].address == f"127.0.0.{i}"

        os.kill(children[0], signal.SIGKILL)
        srv.wait_for("exited with status")  # the parent reports the death...
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:  # ...and starts a new worker
            now = workers_of(srv.proc.pid)
            if len(now) == 2 and children[0] not in now:
                break
            time.sleep(0.1)
        assert len(now) == 2 and children[0] not in now

        conf.write_text(f"example.net:{port} {{\n bind 127.0.0.1\n nosuch\n}}\n")
        srv.signal(signal.SIGUSR1)
        srv.wait_for("[ERROR] SIGUSR1")
        assert ask(port, "example.org").rcode() == dns.rcode.NOERROR

        conf.write_text(f"example.net:{port} {{\n bind 127.0.0.1\n whoami\n}}\n")
        srv.signal(signal.SIGUSR1)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if all(
                ask(port, "example.net", f"127.0.0.{i}").rcode() == dns.rcode.NOERROR
                for i in range(2, 12)
            ):
                break
            time.sleep(0.2)
        assert all(
            ask(port, "example.org", f"127.0.0.{i}").rcode() == dns.rcode.REFUSED
            for i in range(2, 12)
        )

        last = workers_of(srv.proc.pid)
        srv.signal(signal.SIGTERM)
        assert srv.wait() == 0
    assert not any(os.path.exists(f"/proc/{pid}") for pid in last)


def test_metrics_of_workers_are_summed() -> None:
    one = (
        "# HELP coredns_dns_requests_total Counter of DNS requests.\n"
        "# TYPE coredns_dns_requests_total counter\n"
        'coredns_dns_requests_total{server="dns://:53",zone=".",type="A"} 3.0\n'
        "# HELP coredns_build_info A metric with a constant '1' value.\n"
        "# TYPE coredns_build_info gauge\n"
        'coredns_build_info{version="0.1.0"} 1.0\n'
    )
    two = one.replace("} 3.0", "} 4.0") + (
        "# HELP coredns_cache_entries The number of elements in the cache.\n"
        "# TYPE coredns_cache_entries gauge\n"
        'coredns_cache_entries{type="success"} 7.0\n'
    )
    merged = {f.name: f for f in merge_metrics([one, two])}
    (requests,) = merged["coredns_dns_requests"].samples
    assert requests.value == 7.0
    assert merged["coredns_build_info"].samples[0].value == 1.0
    assert merged["coredns_cache_entries"].samples[0].value == 7.0
