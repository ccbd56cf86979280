"""forward in front of a real name server: dnsmasq on a loopback address and a free port."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator

import dns.exception
import dns.flags
import dns.message
import dns.rcode
import pytest
import trio

from pycorefile import Server
from pycorefile.testing import make_query, query, serve
from tests.process import free_port

HOST = "127.0.0.9"
STRINGS = ["a" * 250, "b" * 250, "c" * 250]
"""One TXT record of about 800 bytes: more than a plain UDP client may get."""


class Dnsmasq:
    """dnsmasq answering ``example.test`` (A), ``nx.test`` (NXDOMAIN) and a large TXT."""

    def __init__(self) -> None:
        self.port = free_port(HOST)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def start(self) -> None:
        binary = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
        txt = ",".join(STRINGS)
        self.proc = subprocess.Popen(
            [
                binary, "--no-daemon", "--no-resolv", "--no-hosts", "--conf-file=/dev/null",
                f"--port={self.port}", f"--listen-address={HOST}", "--bind-interfaces",
                "--pid-file=", "--user=root", "--address=/example.test/192.0.2.1",
                "--address=/nx.test/", f"--txt-record=big.example.test,{txt}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(timeout=5)
            self.proc = None

    async def wait_ready(self) -> None:
        with trio.fail_after(5):
            while True:
                try:
                    await query((HOST, self.port), "www.example.test", "A", timeout=0.2)
                    return
                except (dns.exception.Timeout, OSError):
                    await trio.sleep(0.05)


@pytest.fixture
def dnsmasq() -> Iterator[Dnsmasq]:
    server = Dnsmasq()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def forwarding(dnsmasq: Dnsmasq) -> AsyncIterator[Server]:
    await dnsmasq.wait_ready()
    text = f".:0 {{\n bind 127.0.0.1\n forward . {dnsmasq.address}\n}}\n"
    async with serve(text) as server:
        yield server


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_answers_from_dnsmasq(forwarding: Server, proto: str) -> None:
    q = make_query("WWW.Example.TEST.", "A")
    r = await query(forwarding, q, proto=proto)
    assert r.id == q.id
    assert r.question[0].name.to_text() == "WWW.Example.TEST."
    assert r.rcode() == dns.rcode.NOERROR
    assert [rd.to_text() for rrset in r.answer for rd in rrset] == ["192.0.2.1"]


async def test_nxdomain_passes_through(forwarding: Server) -> None:
    r = await query(forwarding, "host.nx.test", "A")
    assert r.rcode() == dns.rcode.NXDOMAIN


async def test_large_answer_truncated_for_plain_udp_and_whole_otherwise(
    forwarding: Server,
) -> None:
    plain = await query(forwarding, "big.example.test", "TXT")
    edns = await query(forwarding, "big.example.test", "TXT", edns=True)
    tcp = await query(forwarding, "big.example.test", "TXT", proto="tcp")
    assert plain.rcode() == dns.rcode.NOERROR and plain.flags & dns.flags.TC
    for whole in (edns, tcp):
        assert not whole.flags & dns.flags.TC
        (rrset,) = whole.answer
        assert [s.decode() for s in rrset[0].strings] == STRINGS


async def test_force_tcp_to_dnsmasq(dnsmasq: Dnsmasq) -> None:
    await dnsmasq.wait_ready()
    text = f".:0 {{\n bind 127.0.0.1\n forward . {dnsmasq.address} {{\n force_tcp\n }}\n}}\n"
    async with serve(text) as server:
        for _ in range(3):
            r = await query(server, "www.example.test", "A")
            assert [rd.to_text() for rrset in r.answer for rd in rrset] == ["192.0.2.1"]
        big = await query(server, "big.example.test", "TXT", edns=True)
    assert not big.flags & dns.flags.TC


async def test_stopped_dnsmasq_is_servfail_at_once_never_nxdomain(
    dnsmasq: Dnsmasq, forwarding: Server
) -> None:
    dnsmasq.stop()
    with trio.fail_after(1.5):  # refused at once: no 2 s try timeout
        r = await query(forwarding, "www.example.test", "A")
    assert r.rcode() == dns.rcode.SERVFAIL
