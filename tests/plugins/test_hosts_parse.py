"""hosts: the Corefile directive, the hosts file format and the prepared table, without a server."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest

from pycorefile import CorefileError, Directive, Fallthrough, Request, SetupContext, load_config
from pycorefile.corefile import ServerBlock, ZoneKey
from pycorefile.testing import make_query
from pycorefile_plugins.hosts import (
    HostsConfig,
    HostsMap,
    HostsTable,
    parse_hosts,
    parse_hosts_text,
)
from pycorefile_plugins.hosts._table import changed_names


def ctx() -> SetupContext:
    block = ServerBlock((".",), (), "Corefile", 1)
    return SetupContext(block=block, keys=(ZoneKey("dns", "example.org.", 53),))


def line(name: str, *args: str) -> Directive:
    return Directive(name, args, "Corefile", 3, 9)


def hosts(*args: str, block: tuple[Directive, ...] | None = None) -> HostsConfig:
    return parse_hosts([Directive("hosts", args, "Corefile", 2, 5, block)], ctx())


# -- The directive -------------------------------------------------------------------------


def test_defaults_are_corednss() -> None:
    config = hosts()
    assert config == HostsConfig(path="/etc/hosts", origins=("example.org.",))
    assert (config.ttl, config.reload, config.reverse) == (3600, 5.0, True)
    assert config.fallthrough is None and not config.fallthrough_unsupported


def test_every_option() -> None:
    config = hosts(
        "/tmp/h",
        "example.net",
        "10.0.0.0/8",
        block=(
            line("10.0.0.1", "a.example.net", "b.example.net"),
            line("::1", "c.example.net"),
            line("ttl", "60"),
            line("reload", "0"),
            line("no_reverse"),
            line("fallthrough", "example.net"),
            line("fallthrough_unsupported"),
        ),
    )
    assert config.path == "/tmp/h"
    assert config.origins == ("example.net.", "10.in-addr.arpa.")
    assert config.inline == ("10.0.0.1 a.example.net b.example.net", "::1 c.example.net")
    assert (config.ttl, config.reload, config.reverse) == (60, 0.0, False)
    assert config.fallthrough == Fallthrough(("example.net.",))
    assert config.fallthrough_unsupported


def test_a_line_before_fallthrough_is_a_hosts_line_even_if_it_is_no_address() -> None:
    # As CoreDNS: it is kept as an inline line, and dropped when parsed (no address).
    config = hosts(block=(line("reloadd", "5s"),))
    assert config.inline == ("reloadd 5s",)
    assert len(parse_hosts_text(config.inline, config.origins)) == 0


@pytest.mark.parametrize(
    ("body", "message", "column"),
    [
        ("ttl", "plugin/hosts: ttl needs a time in second", 5),
        ("ttl abc", "plugin/hosts: ttl needs a number of second", 9),
        ("ttl 0", "plugin/hosts: ttl provided is invalid", 9),
        ("ttl 65536", "plugin/hosts: ttl provided is invalid", 9),
        ("reload", "plugin/hosts: reload needs a duration (zero seconds to disable)", 5),
        ("reload 5s 6s", "plugin/hosts: reload needs a duration (zero seconds to disable)", 5),
        ("reload soon", "plugin/hosts: invalid duration for reload 'soon'", 12),
        ("reload -5s", "plugin/hosts: invalid negative duration for reload '-5s'", 12),
        ("fallthrough_unsupported x", "plugin/hosts: Wrong argument count", 29),
        ("fallthrough\n    bogus 1", "plugin/hosts: unknown property 'bogus'", 5),
        ("10.0.0.1 a.example.org {\n }", "plugin/hosts: a hosts line takes no block", 5),
    ],
)
def test_setup_errors_point_at_file_line_and_column(body: str, message: str, column: int) -> None:
    text = f".:53 {{\n hosts {{\n    {body}\n }}\n}}\n"
    with pytest.raises(CorefileError) as caught:
        load_config(text, "Corefile")
    err = caught.value
    assert err.message.startswith(message)
    assert (err.file, err.column) == ("Corefile", column)
    assert err.line == (4 if "unknown property" in message else 3)


def test_fallthrough_unsupported_needs_fallthrough() -> None:
    with pytest.raises(CorefileError) as caught:
        load_config(".:53 {\n hosts {\n  fallthrough_unsupported\n }\n}\n", "Corefile")
    assert caught.value.message == "plugin/hosts: fallthrough_unsupported requires fallthrough"
    assert (caught.value.line, caught.value.column) == (2, 2)


def test_once_per_block() -> None:
    with pytest.raises(CorefileError, match="once per Server Block"):
        load_config(".:53 {\n hosts\n hosts\n}\n", "Corefile")


# -- The hosts file format -----------------------------------------------------------------


def test_file_format() -> None:
    text = """
# a comment
127.0.0.1   localhost localhost.localdomain  # trailing comment
10.0.0.1 Web.Example.ORG www.example.org.
10.0.0.1 web.example.org
fe80::1%eth0 link.example.org
::ffff:10.0.0.2 mapped.example.org
2001:db8::1 web.example.org
10.0.0.3 *.wild.example.org
bogus line here
10.0.0.4
10.0.0.5 outside.example.net
"""
    found = parse_hosts_text(text.splitlines(), ("example.org.",))
    assert found.name4 == {
        "web.example.org.": ["10.0.0.1"],
        "www.example.org.": ["10.0.0.1"],
        "mapped.example.org.": ["10.0.0.2"],
    }
    assert found.name6 == {"link.example.org.": ["fe80::1"], "web.example.org.": ["2001:db8::1"]}
    assert found.wild4 == {"*.wild.example.org.": ["10.0.0.3"]}
    assert found.reverse["10.0.0.1"] == ["web.example.org.", "www.example.org."]
    assert "10.0.0.3" not in found.reverse  # a wildcard has no PTR
    everything = parse_hosts_text(text.splitlines(), (".",), reverse=False)
    assert everything.name4["localhost."] == ["127.0.0.1"]
    assert everything.name4["outside.example.net."] == ["10.0.0.5"]
    assert everything.reverse == {}


def test_entries_count_as_corednss_len() -> None:
    found = parse_hosts_text(["10.0.0.1 a.example.org b.example.org", "::1 a.example.org"], (".",))
    # 3 name->address links and 3 address->name links.
    assert len(found) == 6


# -- The prepared table --------------------------------------------------------------------


def request(name: str, rdtype: str = "A") -> Request:
    return Request(make_query(name, rdtype).to_wire())


def ask(table: HostsTable, name: str, rdtype: str = "A") -> dns.message.Message | None:
    req = request(name, rdtype)
    found = table.lookup(req.key[:-2], req.qtype)
    if found is None:
        return None
    return dns.message.from_wire(found.render(req.wire, req.name_end, req.edns, req.do))


def addresses(reply: dns.message.Message | None) -> list[str]:
    assert reply is not None
    return [rd.to_text() for rrset in reply.answer for rd in rrset]


def test_wildcards_match_one_label_and_an_exact_name_wins_in_its_source() -> None:
    file = parse_hosts_text(["10.0.0.1 *.w.example.org", "10.0.0.2 exact.w.example.org"], (".",))
    inline = parse_hosts_text(["10.0.0.3 *.w.example.org"], (".",))
    table = HostsTable(file, inline, 60)
    assert addresses(ask(table, "any.w.example.org")) == ["10.0.0.1", "10.0.0.3"]
    # The file's exact name hides its own wildcard, not the inline one.
    assert addresses(ask(table, "exact.w.example.org")) == ["10.0.0.2", "10.0.0.3"]
    assert ask(table, "w.example.org") is None
    assert ask(table, "two.any.w.example.org") is None
    nodata = ask(table, "any.w.example.org", "AAAA")
    assert nodata is not None and nodata.rcode() == dns.rcode.NOERROR and not nodata.answer


def test_file_entries_come_before_inline_ones() -> None:
    table = HostsTable(
        parse_hosts_text(["10.0.0.1 a.example.org"], (".",)),
        parse_hosts_text(["10.0.0.2 a.example.org"], (".",)),
        60,
    )
    assert addresses(ask(table, "a.example.org")) == ["10.0.0.1", "10.0.0.2"]
    assert addresses(ask(table, "A.Example.Org")) == ["10.0.0.1", "10.0.0.2"]
    assert table.entries == 4


def test_an_empty_table_knows_nothing() -> None:
    table = HostsTable(HostsMap(), HostsMap(), 60)
    assert ask(table, "a.example.org") is None
    assert ask(table, ".", "NS") is None
    assert table.ptr == {} and table.entries == 0


def test_changed_names_between_loads() -> None:
    def table(*lines: str) -> HostsTable:
        return HostsTable(parse_hosts_text(lines, (".",)), HostsMap(), 60)

    old = table("10.0.0.1 a.example.org b.example.org", "10.0.0.9 *.w.example.org")
    assert changed_names(old, old) == (frozenset(), frozenset())
    same = table("10.0.0.1 a.example.org b.example.org", "10.0.0.9 *.w.example.org")
    assert changed_names(old, same) == (frozenset(), frozenset())
    new = table("10.0.0.1 a.example.org", "10.0.0.2 b.example.org", "10.0.0.8 *.w.example.org")
    names, below = changed_names(old, new)
    # b moved: its name, the PTR of its old address (now a only) and of the new one.
    assert names == {"b.example.org.", "1.0.0.10.in-addr.arpa.", "2.0.0.10.in-addr.arpa."}
    assert below == {"w.example.org."}  # every name one label below may have changed
    gone = table()
    names, below = changed_names(old, gone)
    assert names == {"a.example.org.", "b.example.org.", "1.0.0.10.in-addr.arpa."}
    assert below == {"w.example.org."}
