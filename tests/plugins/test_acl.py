"""acl: parsing alone, and decisions enforced by the real server."""

from __future__ import annotations

import dns.exception
import dns.rcode
import pytest

from plugins.acl import AclConfig, Action, parse_acl
from pycorefile import Directive, SetupContext, SetupError
from pycorefile.corefile import ServerBlock, ZoneKey
from pycorefile.testing import query, serve


def ctx() -> SetupContext:
    block = ServerBlock((".",), (), "Corefile", 1)
    return SetupContext(block=block, keys=(ZoneKey("dns", ".", 53),))


def acl(*rules: tuple[str, ...], args: tuple[str, ...] = ()) -> Directive:
    lines = tuple(Directive(r[0], r[1:], "Corefile", 2 + i, 5) for i, r in enumerate(rules))
    return Directive("acl", args, "Corefile", 1, 1, lines)


DECISIONS = [
    # (rules, qtype, client, expected)
    ((("block", "type", "ANY"),), 255, "10.1.2.3", Action.BLOCK),
    ((("block", "type", "ANY"),), 1, "10.1.2.3", Action.ALLOW),
    ((("allow", "net", "10.0.0.0/8"), ("block",)), 1, "10.9.9.9", Action.ALLOW),
    ((("allow", "net", "10.0.0.0/8"), ("block",)), 1, "192.0.2.1", Action.BLOCK),
    ((("filter", "type", "AAAA", "net", "192.0.2.0/24"),), 28, "192.0.2.5", Action.FILTER),
    ((("filter", "type", "AAAA", "net", "192.0.2.0/24"),), 1, "192.0.2.5", Action.ALLOW),
    ((("drop", "net", "*"),), 16, "::1", Action.DROP),
    ((("block", "net", "127.0.0.1"),), 1, "::ffff:127.0.0.1", Action.BLOCK),
    ((("block", "type", "*", "net", "2001:db8::/32"),), 1, "2001:db8::7", Action.BLOCK),
]


@pytest.mark.parametrize(("rules", "qtype", "client", "expected"), DECISIONS)
def test_decisions(
    rules: tuple[tuple[str, ...], ...], qtype: int, client: str, expected: Action
) -> None:
    config = parse_acl([acl(*rules)], ctx())
    assert config.decide(qtype, client) is expected


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        (("permit",), "unexpected token 'permit'"),
        (("block", "type", "NOPE"), "unexpected query type 'NOPE'"),
        (("block", "net", "10.0.0.0/99"), "illegal CIDR notation '10.0.0.0/99'"),
        (("block", "via", "x"), "unexpected token 'via'"),
    ],
)
def test_parse_errors(rule: tuple[str, ...], message: str) -> None:
    with pytest.raises(SetupError, match=message) as info:
        parse_acl([acl(rule)], ctx())
    assert info.value.directive is not None and info.value.directive.line == 2


def test_zones_default_to_the_block() -> None:
    config = parse_acl([acl(("block",), args=("Example.ORG",))], ctx())
    assert config == AclConfig(("example.org.",), config.rules)


COREFILE = """\
.:0 {
    bind 127.0.0.1
    acl example.org {
        block type ANY
        filter type AAAA
        drop type MX
        allow net 127.0.0.0/8
        block
    }
    whoami
}
"""


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize(
    ("name", "rdtype", "rcode", "answered"),
    [
        ("example.org", "ANY", dns.rcode.REFUSED, False),
        ("www.example.org", "AAAA", dns.rcode.NOERROR, False),  # filtered: empty
        ("example.org", "A", dns.rcode.NOERROR, True),  # loopback allowed: whoami answers
        ("example.net", "ANY", dns.rcode.NOERROR, True),  # outside the acl's zone
    ],
)
async def test_served(proto: str, name: str, rdtype: str, rcode: int, answered: bool) -> None:
    async with serve(COREFILE) as server:
        reply = await query(server, name, rdtype, proto=proto)
    assert reply.rcode() == rcode
    assert bool(reply.additional) == answered
    assert reply.question[0].name.to_text() == name + "."


async def test_drop_sends_nothing_and_server_goes_on() -> None:
    async with serve(COREFILE) as server:
        with pytest.raises(dns.exception.Timeout):
            await query(server, "example.org", "MX", timeout=0.5)
        assert (await query(server, "example.org", "A")).rcode() == dns.rcode.NOERROR


async def test_non_loopback_source_blocked() -> None:
    """The default-deny rule refuses a client outside 127.0.0.0/8 (here ::1)."""
    corefile = COREFILE.replace("bind 127.0.0.1", "bind ::1")
    async with serve(corefile) as server:
        reply = await query(("::1", server.port()), "example.org", "A")
    assert reply.rcode() == dns.rcode.REFUSED
