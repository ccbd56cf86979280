"""file: authoritative answers from a zone file, served for real and asked over UDP/TCP.

The table's expectations are CoreDNS's (``plugin/file/lookup.go`` and its tests):
AA on every answer but bare referrals, the apex NS in the authority section of
positive answers, the SOA (TTL as in the file) in negative ones, glue only for
referrals and the apex NS, A/AAAA of in-zone MX and SRV targets in additional.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest
import trio

from pycorefile import CorefileError, Server, load_config
from pycorefile.testing import Upstream, query, serve
from tests.logcapture import collect_logs

ZONE = Path(__file__).parent / "data" / "file" / "db.example.org"
SOA = (
    "example.org. 3600 SOA ns1.example.org. hostmaster.example.org. "
    "2024010101 7200 3600 1209600 300"
)
APEX_NS = ["example.org. 3600 NS ns1.example.org.", "example.org. 3600 NS ns2.example.org."]
SUB_NS = [
    "sub.example.org. 3600 NS ns.elsewhere.net.",
    "sub.example.org. 3600 NS ns.sub.example.org.",
]
WWW_A = "www.example.org. 300 A 192.0.2.80"


def rrs(section: list[dns.rrset.RRset]) -> list[str]:
    """Each record as ``owner TTL TYPE rdata`` (class left out, names lowercased), sorted.

    Lowercased: a name compressed against the question takes the question's letter case.
    """
    return sorted(
        f"{rrset.name} {rrset.ttl} {dns.rdatatype.to_text(rrset.rdtype)} {rd}".lower()
        for rrset in section
        for rd in rrset
    )


def lowered(records: list[str]) -> list[str]:
    return sorted(record.lower() for record in records)


@dataclass(frozen=True)
class Case:
    qname: str
    qtype: str
    rcode: int = dns.rcode.NOERROR
    aa: bool = True
    answer: list[str] = field(default_factory=list)
    authority: list[str] = field(default_factory=list)
    additional: list[str] = field(default_factory=list)


NXDOMAIN = dns.rcode.NXDOMAIN
CASES = [
    Case("example.org.", "SOA", answer=[SOA], authority=APEX_NS),
    Case(
        "example.org.",
        "NS",
        answer=APEX_NS,
        additional=[
            "ns1.example.org. 3600 A 192.0.2.53",
            "ns2.example.org. 3600 A 192.0.2.54",
            "ns2.example.org. 3600 AAAA 2001:db8::54",
        ],
    ),
    Case("example.org.", "A", answer=["example.org. 3600 A 192.0.2.1"], authority=APEX_NS),
    Case(
        "example.org.",
        "MX",
        answer=["example.org. 3600 MX 10 mail.example.org."],
        authority=APEX_NS,
        additional=["mail.example.org. 3600 A 192.0.2.25"],
    ),
    Case("example.org.", "ANY", authority=[SOA]),  # CoreDNS: NODATA for ANY (#3405)
    Case("www.example.org.", "A", answer=[WWW_A], authority=APEX_NS),
    Case("WwW.ExAmPlE.oRg.", "A", answer=[WWW_A], authority=APEX_NS),
    Case("www.example.org.", "MX", authority=[SOA]),
    Case(
        "alias.example.org.",
        "A",
        answer=["alias.example.org. 3600 CNAME www.example.org.", WWW_A],
        authority=APEX_NS,
    ),
    Case(
        "alias2.example.org.",
        "AAAA",
        answer=[
            "alias.example.org. 3600 CNAME www.example.org.",
            "alias2.example.org. 3600 CNAME alias.example.org.",
            "www.example.org. 300 AAAA 2001:db8::80",
        ],
        authority=APEX_NS,
    ),
    Case(
        "alias.example.org.",
        "CNAME",
        answer=["alias.example.org. 3600 CNAME www.example.org."],
        authority=APEX_NS,
    ),
    # The target's NXDOMAIN is the reply's rcode, the CNAME kept (RFC 6604).
    Case(
        "dangling.example.org.",
        "A",
        NXDOMAIN,
        answer=["dangling.example.org. 3600 CNAME missing.example.org."],
        authority=[SOA],
    ),
    # Out of the zone: left for the client's resolver to follow (no server re-query yet).
    Case(
        "outside.example.org.",
        "A",
        answer=["outside.example.org. 3600 CNAME www.example.net."],
        authority=APEX_NS,
    ),
    # Wildcards: the owner is the name asked, one or more labels deep.
    Case(
        "foo.wild.example.org.",
        "A",
        answer=["foo.wild.example.org. 3600 A 192.0.2.99"],
        authority=APEX_NS,
    ),
    Case(
        "a.b.wild.example.org.",
        "TXT",
        answer=['a.b.wild.example.org. 3600 TXT "wildcard"'],
        authority=APEX_NS,
    ),
    Case("foo.wild.example.org.", "MX", authority=[SOA]),
    Case("wild.example.org.", "A", authority=[SOA]),  # the wildcard's parent is an ENT
    Case(
        "cname.wild.example.org.",
        "A",
        answer=["cname.wild.example.org. 3600 CNAME www.example.org.", WWW_A],
        authority=APEX_NS,
    ),
    Case(
        "q.cw.example.org.",
        "A",
        answer=["q.cw.example.org. 3600 CNAME www.example.org.", WWW_A],
        authority=APEX_NS,
    ),
    # Closest encloser (RFC 4592): deep.e is an ENT, so *.e does not reach below it.
    Case("y.e.example.org.", "A", answer=["y.e.example.org. 3600 A 192.0.2.8"], authority=APEX_NS),
    Case("y.deep.e.example.org.", "A", NXDOMAIN, authority=[SOA]),
    Case("deep.e.example.org.", "A", authority=[SOA]),
    # Empty non-terminals: NODATA, not NXDOMAIN.
    Case("ent.example.org.", "A", authority=[SOA]),
    Case("b.ent.example.org.", "A", authority=[SOA]),
    Case(
        "a.b.ent.example.org.",
        "A",
        answer=["a.b.ent.example.org. 3600 A 192.0.2.7"],
        authority=APEX_NS,
    ),
    Case("nx.example.org.", "A", NXDOMAIN, authority=[SOA]),
    Case("no.such.name.example.org.", "AAAA", NXDOMAIN, authority=[SOA]),
    # A delegation: referral without AA, the cut's NS in authority, glue below the cut.
    Case(
        "x.sub.example.org.",
        "A",
        aa=False,
        authority=SUB_NS,
        additional=["ns.sub.example.org. 3600 A 192.0.2.100"],
    ),
    Case(
        "sub.example.org.",
        "NS",
        aa=False,
        authority=SUB_NS,
        additional=["ns.sub.example.org. 3600 A 192.0.2.100"],
    ),
    Case(
        "ns.sub.example.org.",
        "A",
        aa=False,
        authority=SUB_NS,
        additional=["ns.sub.example.org. 3600 A 192.0.2.100"],
    ),
    Case("sub.example.org.", "DS", authority=[SOA]),  # the parent answers DS at the cut
    Case(
        "_sip._tcp.example.org.",
        "SRV",
        answer=["_sip._tcp.example.org. 3600 SRV 0 5 5060 mail.example.org."],
        authority=APEX_NS,
        additional=["mail.example.org. 3600 A 192.0.2.25"],
    ),
    # DNAME: the record, a synthesised CNAME, and the target's answer (or its rcode).
    Case(
        "x.dn.example.org.",
        "A",
        answer=[
            "dn.example.org. 3600 DNAME other.example.org.",
            "x.dn.example.org. 3600 CNAME x.other.example.org.",
            "x.other.example.org. 3600 A 192.0.2.33",
        ],
        authority=APEX_NS,
    ),
    Case(
        "y.dn.example.org.",
        "A",
        NXDOMAIN,
        answer=[
            "dn.example.org. 3600 DNAME other.example.org.",
            "y.dn.example.org. 3600 CNAME y.other.example.org.",
        ],
        authority=[SOA],
    ),
]


@pytest.fixture
async def served(tmp_path: Path) -> AsyncIterator[Server]:
    zone = tmp_path / "db.example.org"
    shutil.copy(ZONE, zone)
    async with serve(f"example.org:0 {{\n bind 127.0.0.1\n file {zone}\n}}\n") as server:
        yield server


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.qname}{c.qtype}")
@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_answers_as_coredns(served: Server, case: Case, proto: str) -> None:
    reply = await query(served, case.qname, case.qtype, proto=proto)
    assert reply.rcode() == case.rcode
    assert bool(reply.flags & dns.flags.AA) == case.aa
    assert not reply.flags & dns.flags.RA
    assert reply.question[0].name.to_text() == case.qname  # the client's case echoed
    assert rrs(reply.answer) == lowered(case.answer)
    assert rrs(reply.authority) == lowered(case.authority)
    assert rrs(reply.additional) == lowered(case.additional)


async def test_a_repeated_question_gets_the_same_answer_with_its_own_id(served: Server) -> None:
    first = await query(served, "foo.wild.example.org", "A")
    again = await query(served, "FOO.wild.example.org", "A")
    assert rrs(first.answer) == ["foo.wild.example.org. 3600 a 192.0.2.99"]
    assert rrs(again.answer) == ["foo.wild.example.org. 3600 a 192.0.2.99"]
    assert again.question[0].name.to_text() == "FOO.wild.example.org."


async def test_dnssec_records_only_with_do(served: Server) -> None:
    plain = await query(served, "www.example.org", "A", edns=True)
    signed = await query(served, "www.example.org", "A", do=True)
    assert [r.rdtype for r in plain.answer] == [dns.rdatatype.A]
    assert sorted(r.rdtype for r in signed.answer) == [dns.rdatatype.A, dns.rdatatype.RRSIG]
    assert signed.ednsflags & dns.flags.DO


async def test_zone_transfers_are_refused(served: Server) -> None:
    reply = await query(served, "example.org", "AXFR", proto="tcp")
    assert reply.rcode() == dns.rcode.REFUSED


async def test_an_unknown_name_with_fallthrough_goes_to_the_next_plugin(tmp_path: Path) -> None:
    zone = tmp_path / "db.example.org"
    shutil.copy(ZONE, zone)
    text = f"example.org:0 {{\n bind 127.0.0.1\n file {zone} {{\n  fallthrough\n }}\n whoami\n}}\n"
    async with serve(text) as server:
        missing = await query(server, "nx.example.org", "A")
        ent = await query(server, "ent.example.org", "A")
        nodata = await query(server, "www.example.org", "MX")
    # whoami answers with the client's address in the additional section
    assert missing.rcode() == dns.rcode.NOERROR and not missing.authority
    assert any(r.rdtype == dns.rdatatype.A for r in missing.additional)
    assert not ent.authority and ent.additional
    assert [r.rdtype for r in nodata.authority] == [
        dns.rdatatype.SOA
    ]  # a known name: no fallthrough


async def test_a_cname_into_another_zone_of_the_plugin_is_followed(tmp_path: Path) -> None:
    (tmp_path / "db.a").write_text(
        "$TTL 60\n@ SOA ns hm 1 1 1 1 1\n@ NS ns\nns A 192.0.2.1\nto-b CNAME www.b.test.\n"
    )
    (tmp_path / "db.b").write_text("$TTL 60\n@ SOA ns hm 1 1 1 1 1\n@ NS ns\nwww A 192.0.2.2\n")
    text = (
        ". :0 {\n bind 127.0.0.1\n"
        f" file {tmp_path / 'db.a'} a.test\n file {tmp_path / 'db.b'} b.test\n}}\n"
    ).replace(". :0", ".:0")
    async with serve(text) as server:
        reply = await query(server, "to-b.a.test", "A")
    assert rrs(reply.answer) == ["to-b.a.test. 60 cname www.b.test.", "www.b.test. 60 a 192.0.2.2"]
    assert reply.flags & dns.flags.AA


# -- Setup ------------------------------------------------------------------------------


def _setup_error(text: str) -> str:
    with pytest.raises(CorefileError) as caught:
        load_config(text)
    return str(caught.value)


def test_a_broken_zone_file_is_a_setup_error_naming_both_places(tmp_path: Path) -> None:
    zone = tmp_path / "db.bad"
    zone.write_text("$TTL 60\n@ SOA ns hm 1 1 1 1 1\n@ NS ns\nbad A 300.1.1.1\n")
    message = _setup_error(f"example.org {{\n    file {zone}\n}}\n")
    assert message.startswith("Corefile:2:10 - plugin/file: ")
    assert f"{zone}:4:" in message


def test_a_zone_without_soa_is_a_setup_error(tmp_path: Path) -> None:
    zone = tmp_path / "db.nosoa"
    zone.write_text("$TTL 60\nwww A 192.0.2.1\n")
    message = _setup_error(f"example.org {{\n    file {zone}\n}}\n")
    assert "has no SOA record for origin example.org." in message


def test_cname_and_other_data_is_refused_with_its_line(tmp_path: Path) -> None:
    zone = tmp_path / "db.cname"
    zone.write_text("$TTL 60\n@ SOA ns hm 1 1 1 1 1\n@ NS ns\nc CNAME www\nc TXT x\n")
    message = _setup_error(f"example.org {{\n    file {zone}\n}}\n")
    assert f"{zone}:5: " in message and "CNAME" in message


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        ("file", "Corefile:2:5 - plugin/file: Wrong argument count"),
        (
            "file {zone} {{\n  reload\n }}",
            "Corefile:3:3 - plugin/file: reload duration value is expected",
        ),
        ("file {zone} {{\n  reload soon\n }}", "Corefile:3:10 - plugin/file: invalid duration"),
        ("file {zone} {{\n  nope\n }}", "Corefile:3:3 - plugin/file: unknown property 'nope'"),
        (
            "file {zone} {{\n  reload 0\n }}\n file /nonexistent/db",
            "Corefile:5:7 - plugin/file: failed to open",
        ),
    ],
)
def test_setup_errors_point_at_the_argument(tmp_path: Path, block: str, expected: str) -> None:
    zone = tmp_path / "db.example.org"
    shutil.copy(ZONE, zone)
    message = _setup_error(
        f"example.org {{\n    {block.format(zone=zone)}\n}}\n".replace("\n }}", "\n }")
    )
    assert message.startswith(expected), message


async def test_a_missing_file_with_reload_answers_servfail_until_it_appears(tmp_path: Path) -> None:
    zone = tmp_path / "db.example.org"
    text = f"example.org:0 {{\n bind 127.0.0.1\n file {zone} {{\n  reload 100ms\n }}\n}}\n"
    async with serve(text) as server:
        assert (await query(server, "www.example.org", "A")).rcode() == dns.rcode.SERVFAIL
        shutil.copy(ZONE, zone)
        reply = await _until(server, "www.example.org", lambda r: r.rcode() == dns.rcode.NOERROR)
    assert rrs(reply.answer) == lowered([WWW_A])


# -- Reload -----------------------------------------------------------------------------


async def _until(
    server: Server, name: str, done: object, rdtype: str = "A", seconds: float = 20.0
) -> dns.message.Message:
    """Ask until ``done(reply)`` holds; bounded in time (the machine is loaded) and count."""
    assert callable(done)
    with trio.fail_after(seconds):
        for _ in range(2000):
            reply = await query(server, name, rdtype)
            if done(reply):
                return reply
            await trio.sleep(0.05)
    raise AssertionError(f"{name} never changed")


def _zone_text(serial: int, address: str) -> str:
    return f"$TTL 60\n@ SOA ns hm {serial} 1 1 1 1\n@ NS ns\nns A 192.0.2.1\nwww A {address}\n"


def _address(reply: dns.message.Message) -> str:
    return rrs(reply.answer)[0].split()[-1] if reply.answer else ""


async def test_a_new_serial_is_loaded_and_an_unchanged_serial_is_not(tmp_path: Path) -> None:
    zone = tmp_path / "db.example.org"
    zone.write_text(_zone_text(1, "192.0.2.1"))
    text = f"example.org:0 {{\n bind 127.0.0.1\n file {zone} {{\n  reload 100ms\n }}\n}}\n"
    with collect_logs(logging.DEBUG) as records:
        async with serve(text) as server:
            assert _address(await query(server, "www.example.org", "A")) == "192.0.2.1"
            # Same serial, new data: CoreDNS keeps the zone it has.
            zone.write_text(_zone_text(1, "192.0.2.2") + "; touched\n")
            with trio.fail_after(20):
                while not any("no change in SOA serial" in r.getMessage() for r in records):
                    await trio.sleep(0.05)
            assert _address(await query(server, "www.example.org", "A")) == "192.0.2.1"
            zone.write_text(_zone_text(2, "192.0.2.3"))
            await _until(server, "www.example.org", lambda r: _address(r) == "192.0.2.3")
    assert any("Successfully reloaded zone 'example.org.'" in r.getMessage() for r in records)


async def test_a_broken_file_keeps_the_last_good_zone(tmp_path: Path) -> None:
    zone = tmp_path / "db.example.org"
    zone.write_text(_zone_text(1, "192.0.2.1"))
    text = f"example.org:0 {{\n bind 127.0.0.1\n file {zone} {{\n  reload 100ms\n }}\n}}\n"
    with collect_logs(logging.ERROR) as errors:
        async with serve(text) as server:
            zone.write_text(_zone_text(2, "192.0.2.2") + "broken A 999.1.1.1\n")
            with trio.fail_after(20):
                while not errors:
                    await trio.sleep(0.05)
            assert "the last good zone keeps serving" in errors[0].getMessage()
            assert f"{zone}:6:" in errors[0].getMessage()
            reply = await query(server, "www.example.org", "A")
            assert reply.rcode() == dns.rcode.NOERROR and _address(reply) == "192.0.2.1"
            zone.write_text(_zone_text(3, "192.0.2.3"))
            await _until(server, "www.example.org", lambda r: _address(r) == "192.0.2.3")


async def test_a_deleted_file_keeps_the_last_zone_and_is_read_when_back(tmp_path: Path) -> None:
    zone = tmp_path / "db.example.org"
    zone.write_text(_zone_text(1, "192.0.2.1"))
    text = f"example.org:0 {{\n bind 127.0.0.1\n file {zone} {{\n  reload 100ms\n }}\n}}\n"
    with collect_logs(logging.ERROR) as errors:
        async with serve(text) as server:
            zone.unlink()
            with trio.fail_after(20):
                while not errors:
                    await trio.sleep(0.05)
            assert "failed to open zone file" in errors[0].getMessage()
            await trio.sleep(0.5)  # several reload intervals with the file still gone
            assert len(errors) == 1  # said once, not at every look
            reply = await query(server, "www.example.org", "A")
            assert reply.rcode() == dns.rcode.NOERROR and _address(reply) == "192.0.2.1"
            zone.write_text(_zone_text(2, "192.0.2.2"))
            await _until(server, "www.example.org", lambda r: _address(r) == "192.0.2.2")


SIGNED = """$TTL 60
@ SOA ns hm 1 1 1 1 1
@ RRSIG SOA 8 2 60 20300101000000 20200101000000 1 example.org. AAAA
@ NS ns
@ NSEC a.example.org. SOA NS RRSIG NSEC
a NSEC ns.example.org. A RRSIG NSEC
a RRSIG NSEC 8 3 60 20300101000000 20200101000000 1 example.org. AAAA
a A 192.0.2.1
ns NSEC example.org. A RRSIG NSEC
ns A 192.0.2.53
"""


async def test_denials_carry_the_nsec_records_with_do(tmp_path: Path) -> None:
    zone = tmp_path / "db.signed"
    zone.write_text(SIGNED)
    async with serve(f"example.org:0 {{\n bind 127.0.0.1\n file {zone}\n}}\n") as server:
        nodata = await query(server, "a.example.org", "TXT", do=True)
        missing = await query(server, "b.example.org", "A", do=True)
        plain = await query(server, "b.example.org", "A", edns=True)
    assert nodata.rcode() == dns.rcode.NOERROR
    assert [(r.name.to_text(), r.rdtype) for r in nodata.authority] == [
        ("example.org.", dns.rdatatype.SOA),
        ("example.org.", dns.rdatatype.RRSIG),
        ("a.example.org.", dns.rdatatype.NSEC),
        ("a.example.org.", dns.rdatatype.RRSIG),
    ]
    assert missing.rcode() == dns.rcode.NXDOMAIN
    nsecs = [r.name.to_text() for r in missing.authority if r.rdtype == dns.rdatatype.NSEC]
    assert nsecs == ["a.example.org.", "example.org."]  # covers b, and the wildcard *.example.org
    assert [r.rdtype for r in plain.authority] == [dns.rdatatype.SOA]


async def test_a_reloaded_zone_is_answered_through_the_cache_at_once(tmp_path: Path) -> None:
    # The zone's TTL is 60 s: only the zone's change announcement can make the cache
    # in front forget the old answer before then.
    zone = tmp_path / "db.example.org"
    zone.write_text(_zone_text(1, "192.0.2.1"))
    text = f"example.org:0 {{\n bind 127.0.0.1\n cache\n file {zone} {{\n  reload 100ms\n }}\n}}\n"
    with collect_logs(logging.INFO) as records:
        async with serve(text) as server:
            for _ in range(2):  # the second is a cache hit
                assert _address(await query(server, "www.example.org", "A")) == "192.0.2.1"
            zone.write_text(_zone_text(2, "192.0.2.2"))
            with trio.fail_after(20):
                while not any("Successfully reloaded" in r.getMessage() for r in records):
                    await trio.sleep(0.05)
            assert _address(await query(server, "www.example.org", "A")) == "192.0.2.2"


async def test_a_cname_target_outside_the_zones_is_asked_of_the_server(tmp_path: Path) -> None:
    zone = tmp_path / "db.example.org"
    zone.write_text(
        "$TTL 60\n@ SOA ns hm 1 1 1 1 1\n@ NS ns\nns A 192.0.2.53\n"
        "www CNAME web.example.net.\ngone CNAME nothing.example.net.\n"
    )
    upstream = Upstream(records={("web.example.net.", "A"): ["198.51.100.7"]}, host="127.0.0.31")
    async with upstream.running():
        corefile = (
            f"example.org:0 {{\n bind 127.0.0.1\n file {zone}\n}}\n"
            f".:0 {{\n bind 127.0.0.1\n forward . {upstream.address}\n}}\n"
        )
        async with serve(corefile) as server:
            reply = await query(server, "www.example.org", "A")
            assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
            assert [rrset.to_text().lower() for rrset in reply.answer] == [
                "www.example.org. 60 in cname web.example.net.",
                "web.example.net. 300 in a 198.51.100.7",
            ]
            assert rrs(reply.authority) == ["example.org. 60 ns ns.example.org."]
            # The target's rcode is the reply's (RFC 6604), with the chain kept.
            missing = await query(server, "gone.example.org", "A")
            assert missing.rcode() == dns.rcode.NXDOMAIN
            assert rrs(missing.answer) == ["gone.example.org. 60 cname nothing.example.net."]
            # Asking again asks again: the followed answer is not remembered by file.
            await query(server, "www.example.org", "A")
            assert upstream.count("web.example.net.", "A") == 2
