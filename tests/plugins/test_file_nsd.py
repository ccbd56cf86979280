"""file beside a second authoritative server: NSD serving the same zone file on loopback.

Each question of the table goes to both; rcode, AA, the answer section and the
authority section's records must agree. Where NSD and CoreDNS differ by design
the comparison leaves it out, and says so here:

- NSD gives a negative answer's SOA the TTL min(SOA TTL, SOA minimum)
  (RFC 2308); CoreDNS the SOA's own TTL: authority TTLs are not compared.
- NSD adds the apex NS addresses to the additional section of positive
  answers; CoreDNS does not: ours must be a subset of NSD's.
- ANY: NSD returns every record of the name, CoreDNS NODATA (#3405): not asked.
- A CNAME out of the zone: NSD sends no authority section, CoreDNS the apex NS
  (its lookup of the target succeeded): that authority is not compared.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import dns.exception
import dns.flags
import dns.message
import dns.rdatatype
import dns.rrset
import pytest
import trio

from pycorefile import Server
from pycorefile.testing import query, serve
from tests.plugins.test_file import CASES, ZONE
from tests.process import free_port

HOST = "127.0.0.11"
QUESTIONS = sorted({(case.qname, case.qtype) for case in CASES if case.qtype != "ANY"})
NOT_COMPARED = {("outside.example.org.", "A", "authority")}


def records(section: list[dns.rrset.RRset], ttl: bool = True) -> list[str]:
    return sorted(
        " ".join(
            part
            for part in (
                rrset.name.to_text().lower(),
                str(rrset.ttl) if ttl else "",
                dns.rdatatype.to_text(rrset.rdtype),
                rd.to_text().lower(),
            )
            if part
        )
        for rrset in section
        for rd in rrset
    )


@pytest.fixture
def nsd(tmp_path: Path) -> Iterator[tuple[str, int]]:
    binary = shutil.which("nsd") or "/usr/sbin/nsd"
    port = free_port(HOST)
    shutil.copy(ZONE, tmp_path / "db.example.org")
    conf = tmp_path / "nsd.conf"
    conf.write_text(
        f"""server:
    ip-address: {HOST}@{port}
    port: {port}
    username: ""
    zonesdir: "{tmp_path}"
    pidfile: "{tmp_path}/nsd.pid"
    database: ""
    zonelistfile: "{tmp_path}/zone.list"
    xfrdfile: "{tmp_path}/xfrd.state"
    xfrdir: "{tmp_path}"
    logfile: "{tmp_path}/nsd.log"
    server-count: 1
    hide-version: yes
remote-control:
    control-enable: no
zone:
    name: "example.org"
    zonefile: "db.example.org"
"""
    )
    proc = subprocess.Popen(
        [binary, "-d", "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        yield HOST, port
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


async def _wait_ready(address: tuple[str, int]) -> None:
    with trio.fail_after(20):
        while True:
            try:
                await query(address, "example.org", "SOA", timeout=0.3)
                return
            except (dns.exception.Timeout, OSError):
                await trio.sleep(0.1)


@pytest.fixture
async def both(
    nsd: tuple[str, int], tmp_path: Path
) -> AsyncIterator[tuple[Server, tuple[str, int]]]:
    await _wait_ready(nsd)
    zone = tmp_path / "ours.db"
    shutil.copy(ZONE, zone)
    async with serve(f"example.org:0 {{\n bind 127.0.0.1\n file {zone}\n}}\n") as server:
        yield server, nsd


async def test_the_same_answers_as_nsd(both: tuple[Server, tuple[str, int]]) -> None:
    ours_server, theirs = both
    differences: list[str] = []
    for qname, qtype in QUESTIONS:
        ours = await query(ours_server, qname, qtype, edns=True)
        nsd = await query(theirs, qname, qtype, edns=True)
        checks = {
            "rcode": (ours.rcode(), nsd.rcode()),
            "aa": (bool(ours.flags & dns.flags.AA), bool(nsd.flags & dns.flags.AA)),
            "answer": (records(ours.answer), records(nsd.answer)),
            "authority": (records(ours.authority, ttl=False), records(nsd.authority, ttl=False)),
        }
        for what, (mine, other) in checks.items():
            if mine != other and (qname, qtype, what) not in NOT_COMPARED:
                differences.append(f"{qname} {qtype} {what}: ours {mine} nsd {other}")
        extra = set(records(ours.additional)) - set(records(nsd.additional))
        if extra:
            differences.append(f"{qname} {qtype} additional: only ours {sorted(extra)}")
    assert not differences, "\n".join(differences)
    assert len(QUESTIONS) >= 30
