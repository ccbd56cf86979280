"""chaos against the real server: class CH TXT queries for version, authors and host name."""

from __future__ import annotations

import socket

import dns.flags
import dns.message
import dns.rcode
import dns.rdataclass
import pytest

from pycorefile import CorefileError, __version__, load_config
from pycorefile.testing import query, serve

NOERROR, SERVFAIL, REFUSED = dns.rcode.NOERROR, dns.rcode.SERVFAIL, dns.rcode.REFUSED


def ch(name: str, rdtype: str = "TXT") -> dns.message.Message:
    return dns.message.make_query(name, rdtype, rdclass=dns.rdataclass.CH)


def strings(reply: dns.message.Message) -> list[str]:
    return [b.decode() for rrset in reply.answer for rd in rrset for b in rd.strings]


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_names_as_coredns(proto: str) -> None:
    async with serve(".:0 {\n  chaos\n}\n") as server:
        hostname = socket.gethostname()
        for name, expected in [
            ("version.bind", [f"pycorefile-{__version__}"]),
            ("VERSION.server", [f"pycorefile-{__version__}"]),
            ("authors.bind", ["The pycorefile authors"]),
            ("hostname.bind", [hostname]),
            ("id.server", [hostname]),
        ]:
            reply = await query(server, ch(name), proto=proto)
            assert reply.rcode() == NOERROR, name
            assert strings(reply) == expected, name
            [rrset] = reply.answer
            assert rrset.rdclass == dns.rdataclass.CH and rrset.ttl == 0
            assert rrset.name == reply.question[0].name  # owner as asked
            assert reply.question[0].rdclass == dns.rdataclass.CH
            assert not reply.flags & (dns.flags.AA | dns.flags.RA)


async def test_version_and_authors_from_the_corefile() -> None:
    async with serve(".:0 {\n  chaos MyDNS-1 zed alice zed bob\n}\n") as server:
        assert strings(await query(server, ch("version.bind"))) == ["MyDNS-1"]
        authors = strings(await query(server, ch("authors.bind")))
        assert sorted(authors) == ["alice", "bob", "zed"]  # de-duplicated, shuffled per second


async def test_one_argument_is_the_version_cut_at_255() -> None:
    long = "v" * 300
    async with serve(f".:0 {{\n  chaos {long}\n}}\n") as server:
        assert strings(await query(server, ch("version.bind"))) == ["v" * 255]


async def test_other_questions_go_to_the_next_plugin() -> None:
    async with serve(".:0 {\n  chaos\n  whoami\n}\n") as server:
        # Another CH name, another type, and class IN: whoami answers all of them.
        for q in (
            ch("example.bind"),
            ch("version.bind", "A"),
            dns.message.make_query("version.bind", "TXT"),
        ):
            reply = await query(server, q)
            assert reply.rcode() == NOERROR and reply.additional, q.question


async def test_class_ch_is_refused_where_no_plugin_takes_it() -> None:
    text = "bind.:0 {\n  chaos\n}\nexample.org.:0 {\n  whoami\n}\n"
    async with serve(text) as server:
        assert (await query(server, ch("version.bind"))).rcode() == NOERROR
        assert (await query(server, ch("a.example.org"))).rcode() == REFUSED


async def test_the_chain_ends_in_servfail() -> None:
    async with serve(".:0 {\n  chaos\n}\n") as server:
        assert (await query(server, ch("example.bind"))).rcode() == SERVFAIL


def test_setup_errors() -> None:
    with pytest.raises(CorefileError) as caught:
        load_config(".:53 {\n chaos {\n   version x\n }\n}\n")
    err = caught.value
    assert err.message == "plugin/chaos: unknown property 'version'"
    assert (err.line, err.column) == (3, 4)
    with pytest.raises(CorefileError, match="once per Server Block"):
        load_config(".:53 {\n chaos\n chaos\n}\n")
