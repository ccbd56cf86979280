"""autopath: the Corefile line and resolv.conf reading, without a server."""

from __future__ import annotations

from pathlib import Path

import pytest

from pycorefile import CorefileError, Directive, SetupContext, SetupError, load_config
from pycorefile.corefile import ServerBlock, ZoneKey
from pycorefile_plugins.autopath import (
    AutopathConfig,
    SearchPath,
    normalize_search,
    parse_autopath,
    resolv_conf_search,
)
from pycorefile_plugins.autopath._plugin import (
    reply_facts,
    reply_lifetime,
    suffix_start,
    wire_labels,
)

SEARCH = ("ns1.svc.cluster.local.", "svc.cluster.local.", "cluster.local.")


def ctx(*names: str) -> SetupContext:
    """A block holding directives ``names`` besides autopath."""
    others = tuple(Directive(n, (), "Corefile", 3 + i, 5) for i, n in enumerate(names))
    block = ServerBlock((".",), others, "Corefile", 1)
    return SetupContext(block=block, keys=(ZoneKey("dns", ".", 53),))


def autopath(*args: str, block: tuple[Directive, ...] | None = None) -> Directive:
    return Directive("autopath", args, "Corefile", 2, 5, block)


@pytest.fixture
def resolv(tmp_path: Path) -> Path:
    path = tmp_path / "resolv.conf"
    path.write_text(
        "# generated\nnameserver 10.96.0.10\n"
        "search NS1.svc.cluster.local svc.cluster.local. cluster.local\noptions ndots:5\n"
    )
    return path


def test_plugin_source_and_default_zones() -> None:
    config = parse_autopath([autopath("@meshhosts")], ctx("meshhosts"))
    assert config == AutopathConfig((".",), "@meshhosts", (), "meshhosts")


def test_file_source_and_zones(resolv: Path) -> None:
    config = parse_autopath([autopath("Cluster.Local", "10.0.0.0/8", str(resolv))], ctx())
    assert config.zones == ("cluster.local.", "10.in-addr.arpa.")
    assert config.search == SEARCH
    assert config.plugin is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("search a.example b.example\n", ["a.example", "b.example"]),
        ("search a.example\nsearch c.example\n", ["c.example"]),
        ("search a.example\ndomain d.example\n", ["d.example"]),
        ("domain d.example\nsearch a.example b.example\n", ["a.example", "b.example"]),
        ("# search x.example\n; search y.example\nnameserver 1.1.1.1\n", []),
        ("search\n", []),
        ("  search\ta.example   b.example  \n", ["a.example", "b.example"]),
        ("", []),
    ],
)
def test_resolv_conf_search(text: str, expected: list[str]) -> None:
    assert resolv_conf_search(text) == expected


def test_normalize_search() -> None:
    assert normalize_search(["A.Example", "a.example.", ".", "", "b.example"]) == (
        "a.example.",
        "b.example.",
    )
    with pytest.raises(ValueError, match="invalid search domain"):
        normalize_search(["a..b"])


@pytest.mark.parametrize(
    ("args", "block", "message", "arg"),
    [
        ((), None, "no resolv-conf specified", None),
        (("@",), None, "expected a plugin name after '@'", 0),
        (("@autopath",), None, "cannot take its search path from itself", 0),
        (("@meshhosts",), None, "plugin 'meshhosts' is not in this server block", 0),
        (("/nonexistent/resolv.conf",), None, 'failed to parse "/nonexistent/resolv.conf"', 0),
        (("a..b", "@cache"), None, "not a valid domain name", 0),
        (("@cache",), (Directive("fallthrough", (), "Corefile", 3, 9),), "unknown property", None),
    ],
)
def test_parse_errors(
    args: tuple[str, ...],
    block: tuple[Directive, ...] | None,
    message: str,
    arg: int | None,
) -> None:
    with pytest.raises(SetupError, match=message) as info:
        parse_autopath([autopath(*args, block=block)], ctx("cache"))
    assert info.value.arg == arg


def test_bad_search_domain_in_file(tmp_path: Path) -> None:
    path = tmp_path / "resolv.conf"
    path.write_text("search ok.example bad..example\n")
    with pytest.raises(SetupError, match="invalid search domain"):
        parse_autopath([autopath(str(path))], ctx())


def test_errors_point_at_the_argument() -> None:
    """Through the real loader: FILE:LINE:COL of the offending argument."""
    text = ".:0 {\n    autopath cluster.local @nothere\n    whoami\n}\n"
    with pytest.raises(CorefileError) as info:
        load_config(text, "Corefile")
    message = str(info.value)
    assert "Corefile:2:28" in message
    assert "plugin/autopath: plugin 'nothere' is not in this server block" in message


def test_search_path_candidates() -> None:
    search = SearchPath(SEARCH)
    names = [n.to_text() for n in search.candidates((b"web", b"ns2"))]
    assert names == [
        "web.ns2.ns1.svc.cluster.local.",
        "web.ns2.svc.cluster.local.",
        "web.ns2.cluster.local.",
        "web.ns2.",
    ]
    # A repeated search domain is tried once; a name over 255 bytes not at all.
    assert len(SearchPath((*SEARCH, "svc.cluster.local.")).candidates((b"a",))) == 4
    long_base = tuple(b"x" * 63 for _ in range(3))
    assert [
        n.to_text()[-20:] for n in SearchPath(("y" * 60 + ".example.",)).candidates(long_base)
    ] == ["x" * 19 + "."]


@pytest.mark.parametrize(
    ("name", "suffix", "start"),
    [
        (b"\x03web\x03ns1\x03svc\x00", b"\x03ns1\x03svc\x00", 4),
        (b"\x03ns1\x03svc\x00", b"\x03ns1\x03svc\x00", 0),
        (b"\x03svc\x00", b"\x03ns1\x03svc\x00", -1),
        (b"\x04xns1\x03svc\x00", b"\x03ns1\x03svc\x00", -1),
        # The suffix's bytes inside a label, not at a label boundary.
        (b"\x05a\x03ns1\x03svc\x00", b"\x03ns1\x03svc\x00", -1),
    ],
)
def test_suffix_start(name: bytes, suffix: bytes, start: int) -> None:
    assert suffix_start(name, suffix) == start


def test_wire_labels() -> None:
    assert wire_labels(b"\x03web\x03ns2") == (b"web", b"ns2")
    assert wire_labels(b"") == ()


def test_reply_lifetime_reads_soa_minimum() -> None:
    import dns.message
    import dns.rcode
    import dns.rrset

    q = dns.message.make_query("x.example.", "A")
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.NXDOMAIN)
    r.authority.append(
        dns.rrset.from_text("example.", 300, "IN", "SOA", "ns. host. 1 3600 600 86400 45")
    )
    assert reply_lifetime(r) == 45
    assert reply_lifetime(r.to_wire()) == 45
    bare = dns.message.make_response(q)
    assert reply_lifetime(bare) == reply_lifetime(bare.to_wire()) == 5
    assert reply_lifetime(b"\x00" * 5) == 0


def test_reply_facts_see_an_soa_only_in_the_authority_section() -> None:
    import dns.message
    import dns.rcode
    import dns.rrset

    q = dns.message.make_query("x.example.", "A")
    soa = "ns. host. 1 3600 600 86400 45"
    cases = []
    denial = dns.message.make_response(q)
    denial.set_rcode(dns.rcode.NXDOMAIN)
    denial.authority.append(dns.rrset.from_text("example.", 300, "IN", "SOA", soa))
    cases.append((denial, (45, True)))
    bare = dns.message.make_response(q)
    bare.set_rcode(dns.rcode.NXDOMAIN)
    cases.append((bare, (5, False)))
    answered = dns.message.make_response(q, our_payload=1232)
    answered.answer.append(dns.rrset.from_text("x.example.", 20, "IN", "A", "192.0.2.1"))
    cases.append((answered, (20, False)))
    soa_query = dns.message.make_response(dns.message.make_query("example.", "SOA"))
    soa_query.answer.append(dns.rrset.from_text("example.", 300, "IN", "SOA", soa))
    cases.append((soa_query, (45, False)))
    for msg, facts in cases:
        assert reply_facts(msg) == reply_facts(msg.to_wire()) == facts
    assert reply_facts(b"\x00" * 5) == (0, False)
