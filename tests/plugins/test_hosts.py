"""hosts against the real server, over UDP and TCP: answers, reload, metrics, cache, fast path.

The next plugin, where one is needed, is *forward* to a test ``Upstream`` on
127.0.0.x; the hosts file is a real file in the test's directory.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import pytest
import trio

from pycorefile import Server, load_config
from pycorefile._registry import Registry
from pycorefile.testing import Upstream, query, scrape, serve
from pycorefile_plugins.hosts import HostsPlugin

NOERROR, NXDOMAIN, SERVFAIL = dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL
PROTOS = ("udp", "tcp")

HOSTS = """\
# the test's hosts file
10.0.0.1 web.example.org www.example.org
2001:db8::1 web.example.org
10.0.0.2 v4only.example.org
2001:db8::2 v6only.example.org
10.0.0.9 *.wild.example.org
10.0.0.10 exact.wild.example.org
10.0.0.20 elsewhere.example.net
"""


def texts(reply: dns.message.Message) -> list[str]:
    return [f"{rrset.name} {rrset.ttl} {rd.to_text()}" for rrset in reply.answer for rd in rrset]


@asynccontextmanager
async def upstream() -> AsyncIterator[Upstream]:
    records = {
        ("next.example.org.", "A"): ["192.0.2.1"],
        ("9.9.0.10.in-addr.arpa.", "PTR"): ["upstream.example."],
    }
    async with Upstream(records=records, host="127.0.0.3").running() as up:
        yield up


def asked(up: Upstream) -> list[tuple[str, str, str]]:
    """What the upstream was asked, less forward's own HINFO probes."""
    return [q for q in up.queries if q[1] != "HINFO"]


def corefile(path: Path, up: Upstream, options: str = "", head: str = "") -> str:
    return (
        f".:0 {{\n{head}\n  hosts {path} example.org {{\n    10.0.0.3 inline.example.org\n"
        f"    10.0.0.1 web.example.org\n{options}\n  }}\n  forward . {up.address}\n}}\n"
    )


# -- Answers ---------------------------------------------------------------------------------

# name, type, rcode, answer lines (owner TTL rdata), the query reaches the upstream
TABLE: list[tuple[str, str, int, list[str]]] = [
    ("web.example.org", "A", NOERROR, ["web.example.org. 3600 10.0.0.1", ]),
    ("web.example.org", "AAAA", NOERROR, ["web.example.org. 3600 2001:db8::1"]),
    ("www.example.org", "A", NOERROR, ["www.example.org. 3600 10.0.0.1"]),
    ("inline.example.org", "A", NOERROR, ["inline.example.org. 3600 10.0.0.3"]),
    # A known name with no address of the asked family, or another type: NODATA, no SOA.
    ("v4only.example.org", "AAAA", NOERROR, []),
    ("v6only.example.org", "A", NOERROR, []),
    ("web.example.org", "MX", NOERROR, []),
    ("web.example.org", "TXT", NOERROR, []),
    # Wildcards: one label, and an exact name of the same source wins.
    ("x.wild.example.org", "A", NOERROR, ["x.wild.example.org. 3600 10.0.0.9"]),
    ("exact.wild.example.org", "A", NOERROR, ["exact.wild.example.org. 3600 10.0.0.10"]),
    ("x.wild.example.org", "AAAA", NOERROR, []),
    # PTR for any name (the reverse zone is not among the zones); never for a wildcard.
    ("1.0.0.10.in-addr.arpa", "PTR", NOERROR,
     ["1.0.0.10.in-addr.arpa. 3600 web.example.org.",
      "1.0.0.10.in-addr.arpa. 3600 www.example.org."]),
    ("3.0.0.10.in-addr.arpa", "PTR", NOERROR, ["3.0.0.10.in-addr.arpa. 3600 inline.example.org."]),
    ("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa", "PTR", NOERROR,
     ["1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. 3600 "
      "web.example.org."]),
]  # fmt: skip


@pytest.mark.parametrize("proto", PROTOS)
async def test_answers_as_coredns(tmp_path: Path, proto: str) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    async with upstream() as up, serve(corefile(path, up)) as server:
        for name, rdtype, rcode, answer in TABLE:
            reply = await query(server, name, rdtype, proto=proto)
            assert reply.rcode() == rcode, (name, rdtype)
            # The inline line for web.example.org repeats the file's address: kept once.
            assert texts(reply) == answer, (name, rdtype)
            assert reply.flags & dns.flags.AA, (name, rdtype)
            assert not reply.flags & dns.flags.RA  # as CoreDNS: SetReply never sets RA
            assert reply.flags & dns.flags.RD  # copied from the query
            assert reply.authority == [] and reply.additional == []
        assert asked(up) == []  # every one of these was answered by hosts


async def test_question_case_and_edns_are_the_clients(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    async with upstream() as up, serve(corefile(path, up)) as server:
        reply = await query(server, "WeB.ExAmple.org", "A", edns=True, do=True)
        assert str(reply.question[0].name) == "WeB.ExAmple.org."
        assert texts(reply) == ["WeB.ExAmple.org. 3600 10.0.0.1"]
        assert reply.edns == 0 and reply.ednsflags & dns.flags.DO
        plain = await query(server, "web.example.org", "A", rd=False)
        assert not plain.flags & dns.flags.RD and plain.edns == -1


async def test_unknown_name_is_servfail_without_fallthrough(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    async with upstream() as up, serve(corefile(path, up)) as server:
        for rdtype in ("A", "AAAA", "MX"):
            reply = await query(server, "next.example.org", rdtype)
            assert reply.rcode() == SERVFAIL and not reply.answer
        # Outside the zones: the next plugin, fallthrough or not.
        reply = await query(server, "elsewhere.example.net", "A")
        assert reply.rcode() == NXDOMAIN  # hosts dropped it at parse time: the upstream answers
        assert up.count("elsewhere.example.net") == 1
        # A PTR hosts does not have: always the next plugin.
        reply = await query(server, "9.9.0.10.in-addr.arpa", "PTR")
        assert texts(reply) == ["9.9.0.10.in-addr.arpa. 300 upstream.example."]
        assert up.count("next.example.org") == 0


async def test_other_classes_go_to_the_next_plugin(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    text = f".:0 {{\n  chaos\n  hosts {path}\n  whoami\n}}\n"
    async with serve(text) as server:
        q = dns.message.make_query("web.example.org", "A", rdclass=dns.rdataclass.CH)
        reply = await query(server, q)
        assert reply.rcode() == NOERROR and not reply.answer and reply.additional  # whoami
        assert texts(await query(server, "web.example.org", "A")) == [
            "web.example.org. 3600 10.0.0.1"
        ]


async def test_fallthrough(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    async with upstream() as up, serve(corefile(path, up, "    fallthrough")) as server:
        reply = await query(server, "next.example.org", "A")
        assert texts(reply) == ["next.example.org. 300 192.0.2.1"]
        # A known name still answers NODATA for the other family and other types.
        for rdtype in ("AAAA", "MX"):
            reply = await query(server, "v4only.example.org", rdtype)
            assert reply.rcode() == NOERROR and not reply.answer
            assert reply.flags & dns.flags.AA
        assert len(asked(up)) == 1


async def test_fallthrough_limited_to_zones(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    options = "    fallthrough sub.example.org"
    async with upstream() as up, serve(corefile(path, up, options)) as server:
        assert (await query(server, "next.example.org", "A")).rcode() == SERVFAIL
        assert (await query(server, "a.sub.example.org", "A")).rcode() == NXDOMAIN
        assert len(asked(up)) == 1


async def test_fallthrough_unsupported(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    options = "    fallthrough\n    fallthrough_unsupported"
    async with upstream() as up, serve(corefile(path, up, options)) as server:
        mx = await query(server, "web.example.org", "MX")
        assert mx.rcode() == NXDOMAIN and mx.authority  # the upstream's answer, with its SOA
        assert up.count("web.example.org", "MX") == 1
        aaaa = await query(server, "v4only.example.org", "AAAA")
        assert not aaaa.answer and not aaaa.authority  # A/AAAA stay with hosts
        assert up.count("v4only.example.org") == 0


async def test_ttl_and_no_reverse(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    options = "    ttl 60\n    no_reverse"
    async with upstream() as up, serve(corefile(path, up, options)) as server:
        reply = await query(server, "web.example.org", "A")
        assert texts(reply) == ["web.example.org. 60 10.0.0.1"]
        reply = await query(server, "1.0.0.10.in-addr.arpa", "PTR")
        assert reply.rcode() == NXDOMAIN and up.count("1.0.0.10.in-addr.arpa", "PTR") == 1


async def test_missing_file_serves_the_inline_entries(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "pycorefile")
    async with upstream() as up, serve(corefile(tmp_path / "absent", up)) as server:
        reply = await query(server, "inline.example.org", "A")
        assert texts(reply) == ["inline.example.org. 3600 10.0.0.3"]
        assert (await query(server, "www.example.org", "A")).rcode() == SERVFAIL
    assert f"plugin/hosts: File does not exist: {tmp_path / 'absent'}" in caplog.text


# -- Reload ----------------------------------------------------------------------------------


async def wait_for(server: Server, name: str, expect: list[str], proto: str = "udp") -> None:
    """Ask until the answer is ``expect`` (bounded: 100 tries, 20 s)."""
    got: list[str] = []
    with trio.move_on_after(20):
        for _ in range(100):
            got = texts(await query(server, name, "A", proto=proto))
            if got == expect:
                return
            await trio.sleep(0.1)
    raise AssertionError(f"{name}: still {got}, expected {expect}")


async def test_reload_and_last_good_table(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    text = f".:0 {{\n  hosts {path} {{\n    reload 100ms\n  }}\n}}\n"
    async with serve(text) as server:
        await wait_for(server, "web.example.org", ["web.example.org. 3600 10.0.0.1"])
        # A new file (written beside and renamed in, as configuration tools do).
        new = tmp_path / "hosts.new"
        new.write_text("10.0.0.77 web.example.org\n")
        os.replace(new, path)
        await wait_for(server, "web.example.org", ["web.example.org. 3600 10.0.0.77"])
        # Broken: a directory where the file was. The last good table keeps serving.
        path.unlink()
        path.mkdir()
        with trio.fail_after(20):
            while "is a directory" not in caplog.text:
                await trio.sleep(0.1)
        reply = await query(server, "web.example.org", "A")
        assert texts(reply) == ["web.example.org. 3600 10.0.0.77"]
        # A FIFO: refused without hanging the reader.
        path.rmdir()
        os.mkfifo(path)
        with trio.fail_after(20):
            while "not a regular file" not in caplog.text:
                await trio.sleep(0.1)
        reply = await query(server, "web.example.org", "A")
        assert texts(reply) == ["web.example.org. 3600 10.0.0.77"]
        # Fixed again.
        path.unlink()
        path.write_text("10.0.0.78 web.example.org\n")
        await wait_for(server, "web.example.org", ["web.example.org. 3600 10.0.0.78"])


class TinyHosts(HostsPlugin):
    max_file_size = 200


async def test_oversized_file_keeps_the_last_good_table(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "hosts"
    path.write_text("10.0.0.1 web.example.org\n")
    text = f".:0 {{\n  hosts {path} {{\n    reload 100ms\n  }}\n}}\n"
    async with serve(text, plugins={"hosts": TinyHosts}) as server:
        await wait_for(server, "web.example.org", ["web.example.org. 3600 10.0.0.1"])
        path.write_text("10.0.0.2 web.example.org\n" + "#" * 300 + "\n")
        with trio.fail_after(20):
            while "larger than the limit of 200 bytes" not in caplog.text:
                await trio.sleep(0.1)
        assert texts(await query(server, "web.example.org", "A")) == [
            "web.example.org. 3600 10.0.0.1"
        ]


async def test_reload_zero_never_rereads(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text("10.0.0.1 web.example.org\n")
    text = f".:0 {{\n  hosts {path} {{\n    reload 0\n  }}\n}}\n"
    async with serve(text) as server:
        path.write_text("10.0.0.2 web.example.org\n")
        await trio.sleep(0.5)
        assert texts(await query(server, "web.example.org", "A")) == [
            "web.example.org. 3600 10.0.0.1"
        ]


async def test_non_utf8_bytes_do_not_lose_the_file(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_bytes(b"# caf\xe9\n10.0.0.1 web.example.org # \xff\n")
    async with serve(f".:0 {{\n  hosts {path}\n}}\n") as server:
        assert texts(await query(server, "web.example.org", "A")) == [
            "web.example.org. 3600 10.0.0.1"
        ]


# -- Metrics ---------------------------------------------------------------------------------


async def test_metrics(tmp_path: Path) -> None:
    org, com = tmp_path / "org", tmp_path / "com"
    org.write_text(HOSTS)
    com.write_text("10.0.0.1 a.example.com\n")
    os.utime(org, (1_700_000_000, 1_700_000_000))
    os.utime(com, (1_700_000_000, 1_700_000_000))
    text = (
        f"example.org:0 {{\n  prometheus 127.0.0.1:0\n  hosts {org} {{\n"
        "    10.0.0.3 i.example.org\n  }\n}\n"
        f"example.com:0 {{\n  hosts {com}\n}}\n"
    )
    async with serve(text) as server:
        metrics = await scrape(server)
    # HOSTS in example.org: 7 name->address and 6 address->name links (a wildcard has no
    # PTR; elsewhere.example.net is outside the zone), the inline line 2 more.
    entries = {s[1]["hostsfile"]: s[2] for s in metrics.samples if s[0] == "coredns_hosts_entries"}
    assert entries == {str(org): 15.0, str(com): 2.0}
    # One process-wide gauge in CoreDNS: the modification time of the file read last.
    stamps = [s[2] for s in metrics.samples if s[0] == "coredns_hosts_reload_timestamp_seconds"]
    assert stamps == [1_700_000_000.0]


async def test_entries_metric_counts_file_and_inline(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    text = (
        f".:0 {{\n  prometheus 127.0.0.1:0\n  hosts {path} example.org {{\n"
        "    10.0.0.3 i.example.org\n  }\n}\n"
    )
    async with serve(text) as server:
        metrics = await scrape(server)
    assert metrics.value("coredns_hosts_entries", hostsfile=str(path)) == 15


# -- With cache and the fast path -------------------------------------------------------------


async def test_answers_through_cache(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    text = (
        f".:0 {{\n  prometheus 127.0.0.1:0\n  cache 30\n  hosts {path} {{\n    reload 100ms\n"
        "  }\n}\n"
    )
    async with serve(text) as server:
        first = await query(server, "web.example.org", "A")
        second = await query(server, "WEB.example.org", "A")
        assert texts(first) == ["web.example.org. 30 10.0.0.1"]  # capped by cache 30
        assert [rd.to_text() for rd in second.answer[0]] == ["10.0.0.1"]
        assert second.answer[0].ttl <= 30 and second.flags & dns.flags.AA
        nodata = await query(server, "web.example.org", "MX")
        assert nodata.rcode() == NOERROR and not nodata.answer
        metrics = await scrape(server)
        assert metrics.value("coredns_cache_hits_total", type="success") >= 1
        assert metrics.value("coredns_cache_misses_total") >= 2
        # A reload: names the new table answers differently are announced, and the
        # cache in front answers the very next query for them from the new table.
        unchanged = await query(server, "www.example.org", "A")
        hits = metrics.value("coredns_cache_hits_total")
        path.write_text(
            HOSTS.replace("10.0.0.1 web.example.org www.example.org", "10.0.0.1 www.example.org")
            + "10.0.0.51 web.example.org\n10.0.0.50 new.example.org\n"
        )
        await wait_for(server, "new.example.org", ["new.example.org. 30 10.0.0.50"])
        changed = await query(server, "web.example.org", "A")
        assert [rd.to_text() for rd in changed.answer[0]] == ["10.0.0.51"]
        # What did not change stays cached.
        again = await query(server, "www.example.org", "A")
        assert [rd.to_text() for rd in again.answer[0]] == ["10.0.0.1"]
        assert [rd.to_text() for rd in unchanged.answer[0]] == ["10.0.0.1"]
        metrics = await scrape(server)
        assert metrics.value("coredns_cache_hits_total") >= hits + 1


async def test_a_reload_reaches_names_the_upstream_answered(tmp_path: Path) -> None:
    """A name that forward answered (and the cache stored) and that the file now has."""
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    async with upstream() as up:
        text = (
            f".:0 {{\n  cache 30\n  hosts {path} {{\n    reload 100ms\n    fallthrough\n  }}\n"
            f"  forward . {up.address}\n}}\n"
        )
        async with serve(text) as server:
            for _ in range(2):
                reply = await query(server, "next.example.org", "A")
                assert texts(reply) == ["next.example.org. 30 192.0.2.1"]
                missing = await query(server, "gone.example.org", "A")
                assert missing.rcode() == NXDOMAIN
            assert up.count("next.example.org") == 1  # the second came from the cache
            path.write_text(HOSTS + "10.0.0.60 next.example.org\n10.0.0.61 gone.example.org\n")
            with trio.fail_after(20):
                while True:
                    reply = await query(server, "next.example.org", "A")
                    if texts(reply) != ["next.example.org. 30 192.0.2.1"]:
                        break
                    await trio.sleep(0.1)
            assert texts(reply) == ["next.example.org. 30 10.0.0.60"]
            # The stored NXDOMAIN is forgotten as well: the first query after the reload.
            gone = await query(server, "gone.example.org", "A")
            assert texts(gone) == ["gone.example.org. 30 10.0.0.61"]
            assert up.count("next.example.org") == 1


FILE_ONLY = [row for row in TABLE if row[0].endswith("example.org") and "inline" not in row[0]]


@pytest.mark.parametrize("proto", PROTOS)
async def test_fast_path_answers_as_the_chain(tmp_path: Path, proto: str) -> None:
    """With only errors before it, hosts answers on the server's fast path; with log
    before it, through the chain: the same replies, credited to hosts both ways."""
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    fast = f"example.org:0 {{\n  prometheus 127.0.0.1:0\n  errors\n  hosts {path}\n}}\n"
    slow = fast.replace("  errors\n", "  errors\n  log\n")
    replies: list[list[tuple[int, int, list[str]]]] = []
    for text in (fast, slow):
        got: list[tuple[int, int, list[str]]] = []
        async with serve(text) as server:
            for name, rdtype, *_ in FILE_ONLY:
                reply = await query(server, name, rdtype, proto=proto)
                reply.id = 0
                got.append((reply.rcode(), reply.flags, texts(reply)))
            metrics = await scrape(server)
            assert metrics.value("coredns_dns_responses_total", plugin="hosts") == len(FILE_ONLY)
        replies.append(got)
    assert replies[0] == replies[1]


def test_the_fast_path_is_taken(tmp_path: Path) -> None:
    path = tmp_path / "hosts"
    path.write_text(HOSTS)
    config = load_config(f"example.org:0 {{\n  errors\n  hosts {path}\n}}\n")
    [block] = config.blocks
    assert block.known_by == "hosts"
    with_log = load_config(f"example.org:0 {{\n  errors\n  log\n  hosts {path}\n}}\n")
    assert with_log.blocks[0].known is None


def test_hosts_is_inside_cache_and_after_minimal() -> None:
    order = [
        name
        for name in Registry.discover().order()
        if name in ("local", "any", "chaos", "cache", "minimal", "hosts", "forward")
    ]
    assert order == ["local", "any", "chaos", "cache", "minimal", "hosts", "forward"]
