"""acl: parsing alone, and decisions enforced by the real server, as CoreDNS's acl."""

from __future__ import annotations

import re

import dns.asyncbackend
import dns.asyncquery
import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.rcode
import pytest

from pycorefile import CorefileError, Directive, Server, SetupContext, load_config
from pycorefile.corefile import ServerBlock, ZoneKey
from pycorefile.testing import Upstream, make_query, query, serve
from pycorefile_plugins.acl import AclConfig, AclPlugin, Action, Policy, Rule, parse_acl

ALLOWED_CLIENT = "127.0.0.2"
OTHER_CLIENT = "127.0.0.3"


def ctx() -> SetupContext:
    block = ServerBlock((".",), (), "Corefile", 1)
    return SetupContext(block=block, keys=(ZoneKey("dns", ".", 53),))


def acl(*rules: tuple[str, ...], args: tuple[str, ...] = ()) -> Directive:
    lines = tuple(Directive(r[0], r[1:], "Corefile", 2 + i, 5) for i, r in enumerate(rules))
    return Directive("acl", args, "Corefile", 1, 1, lines)


async def ask(
    server: Server,
    name: str,
    rdtype: str = "A",
    *,
    source: str = ALLOWED_CLIENT,
    proto: str = "udp",
    edns: bool = False,
    do: bool = False,
    timeout: float = 3.0,
) -> dns.message.Message:
    """A query from ``source`` (a loopback address of its own), over UDP or TCP."""
    q = make_query(name, rdtype, edns=edns, do=do)
    backend = dns.asyncbackend.get_backend("trio")
    port = server.port()
    if proto == "tcp":
        return await dns.asyncquery.tcp(
            q, "127.0.0.1", timeout=timeout, port=port, source=source, backend=backend
        )
    return await dns.asyncquery.udp(
        q, "127.0.0.1", timeout=timeout, port=port, source=source, backend=backend
    )


def extended_errors(reply: dns.message.Message) -> list[int]:
    return [int(o.code) for o in reply.options if isinstance(o, dns.edns.EDEOption)]


# -- Decisions, without a server -------------------------------------------------------

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
    ((("block", "type", "A", "*", "BOGUS"),), 28, "10.0.0.1", Action.BLOCK),  # '*' ends the section
    ((("allow", "type", "A", "type", "AAAA"), ("block",)), 28, "10.0.0.1", Action.ALLOW),
    ((("block",),), 1, "not-an-address", Action.BLOCK),  # as CoreDNS: unreadable is blocked
]


@pytest.mark.parametrize(("rules", "qtype", "client", "expected"), DECISIONS)
def test_decisions(
    rules: tuple[tuple[str, ...], ...], qtype: int, client: str, expected: Action
) -> None:
    config = parse_acl([acl(*rules)], ctx())
    action, _zone = config.decide("example.org.", config.verdicts(qtype, client))
    assert action is expected


def test_zones_default_to_the_block_and_each_directive_keeps_its_own() -> None:
    config = parse_acl([acl(("block",), args=("Example.ORG",)), acl(("allow",))], ctx())
    assert config == AclConfig(
        (
            Rule(("example.org.",), (Policy(Action.BLOCK),)),
            Rule((".",), (Policy(Action.ALLOW),)),
        )
    )


# -- Several acl directives: each a rule for its own zones (17.1) ---------------------

RULES_COREFILE = """\
.:0 {
    bind 127.0.0.1
    acl a.example.org {
        allow net 127.0.0.2
    }
    acl b.example.org {
        block
    }
    acl c.example.org {
        block net 127.0.0.3
    }
    acl example.org {
        allow net 127.0.0.3
        block type TXT
    }
    whoami
}
"""

RULE_CASES = [
    # (client, name, type, rcode, answered)
    # CoreDNS "Fine-Grained 3": a rule for a.example.org says nothing about b.example.org.
    (ALLOWED_CLIENT, "b.example.org", "A", dns.rcode.REFUSED, False),
    (OTHER_CLIENT, "b.example.org", "A", dns.rcode.REFUSED, False),
    (ALLOWED_CLIENT, "a.example.org", "A", dns.rcode.NOERROR, True),
    # allow ends the checking: the later TXT block is never reached.
    (ALLOWED_CLIENT, "a.example.org", "TXT", dns.rcode.NOERROR, True),
    # A rule with no matching policy decides nothing: the next rule for the name does.
    (OTHER_CLIENT, "a.example.org", "TXT", dns.rcode.NOERROR, True),
    (ALLOWED_CLIENT, "c.example.org", "A", dns.rcode.NOERROR, True),
    (ALLOWED_CLIENT, "c.example.org", "TXT", dns.rcode.REFUSED, False),
    # The first rule that decides wins, though a later one would allow.
    (OTHER_CLIENT, "c.example.org", "A", dns.rcode.REFUSED, False),
    (OTHER_CLIENT, "www.example.org", "TXT", dns.rcode.NOERROR, True),
    (ALLOWED_CLIENT, "www.example.org", "TXT", dns.rcode.REFUSED, False),
    # Outside every rule's zones: allowed.
    (ALLOWED_CLIENT, "example.net", "TXT", dns.rcode.NOERROR, True),
]


async def test_each_acl_directive_is_a_rule_for_its_own_zones_first_decision_wins() -> None:
    async with serve(RULES_COREFILE) as server:
        for proto in ("udp", "tcp"):
            for client, name, rdtype, rcode, answered in RULE_CASES:
                reply = await ask(server, name, rdtype, source=client, proto=proto)
                case = (proto, client, name, rdtype)
                assert reply.rcode() == rcode, case
                assert bool(reply.additional) == answered, case  # whoami's records


async def test_metrics_label_the_zone_of_the_rule_that_decided() -> None:
    """CoreDNS counts every allowed query by server alone, the others by the deciding zone."""
    async with serve(RULES_COREFILE) as server:
        await ask(server, "x.b.example.org", source=ALLOWED_CLIENT)
        await ask(server, "c.example.org", "TXT", source=ALLOWED_CLIENT)
        await ask(server, "a.example.org", source=ALLOWED_CLIENT)
        await ask(server, "example.net", source=ALLOWED_CLIENT)
        assert server.config is not None
        plugin = server.config.find("acl")[0]
        assert isinstance(plugin, AclPlugin)
        families = {f.name: f for f in plugin.metrics()}
        label = server.config.blocks[0].server_label
    blocked = families["coredns_acl_blocked_requests"].samples
    assert sorted((s.labels["zone"], s.value) for s in blocked) == [
        ("b.example.org.", 1),
        ("example.org.", 1),
    ]
    (allowed,) = families["coredns_acl_allowed_requests"].samples
    assert allowed.labels == {"server": label, "view": ""}
    assert allowed.value == 2


# -- Blocked and filtered replies carry Extended DNS Errors (17.8) --------------------

EDE_COREFILE = """\
.:0 {
    bind 127.0.0.1
    acl {
        block type A
        filter type AAAA
        drop type MX
    }
    whoami
}
"""


@pytest.mark.parametrize("proto", ["udp", "tcp"])
@pytest.mark.parametrize(
    ("rdtype", "edns", "do", "rcode", "codes"),
    [
        ("A", True, False, dns.rcode.REFUSED, [15]),  # Blocked
        ("A", True, True, dns.rcode.REFUSED, [15]),
        ("AAAA", True, False, dns.rcode.NOERROR, [17]),  # Filtered
        ("A", False, False, dns.rcode.REFUSED, None),  # no EDNS asked: no OPT record
        ("AAAA", False, False, dns.rcode.NOERROR, None),
    ],
)
async def test_block_and_filter_send_extended_dns_errors_blocked_and_filtered(
    proto: str, rdtype: str, edns: bool, do: bool, rcode: int, codes: list[int] | None
) -> None:
    async with serve(EDE_COREFILE) as server:
        reply = await ask(server, "example.org", rdtype, proto=proto, edns=edns, do=do)
    assert reply.rcode() == rcode
    assert not reply.answer and not reply.authority
    assert reply.question[0].name.to_text() == "example.org."
    if codes is None:
        assert reply.edns == -1  # RFC 6891: no OPT record to a client that sent none
    else:
        assert reply.edns == 0
        assert extended_errors(reply) == codes
        assert bool(reply.ednsflags & dns.flags.DO) == do


async def test_drop_sends_nothing_not_even_an_extended_error() -> None:
    async with serve(EDE_COREFILE) as server:
        with pytest.raises(dns.exception.Timeout):
            await ask(server, "example.org", "MX", edns=True, timeout=0.5)
        reply = await ask(server, "example.org", "TXT", edns=True)
    assert reply.rcode() == dns.rcode.NOERROR and reply.additional
    assert extended_errors(reply) == []


# -- Setup errors, as CoreDNS's setup_test.go (17.10) ---------------------------------

ACCEPTED = [
    "block type A net 192.168.0.0/16",
    "block type * net 192.168.0.0/16",
    "block type A net *",
    "allow type * net 192.168.1.0/24\n        block type * net 192.168.0.0/16",
    "filter type A net 192.168.0.0/16",
    "drop type * net 192.168.0.0/16",
    "block type * net 192.168.1.0/24 192.168.3.0/24",
    "block type TXT ANY CNAME net 192.168.3.0/24",
    "block type A net 2001:0db8:85a3:0000:0000:8a2e:0370:7334",
    "block type * net 2001:db8:85a3::8a2e:370:7334",
    "block type A",
    "allow net 2001:db8:abcd:0012::0/64\n        block net 2001:db8:abcd:0012::0/48",
    "allow net 2001:db8:abcd:0012::0/64\n        block",
    "block net 2001:db8:abcd:0012::0/64 2001:db8:85a3::8a2e:370:7334/64",
    "BLOCK TYPE A NET 10.0.0.0/8",  # actions and section names in any case
]


@pytest.mark.parametrize("rules", ACCEPTED)
def test_setup_accepts_what_coredns_accepts(rules: str) -> None:
    text = f".:53 {{\n    acl a.example.org b.example.org {{\n        {rules}\n    }}\n}}\n"
    config = load_config(text)
    plugin = config.find("acl")[0]
    assert isinstance(plugin, AclPlugin)
    assert plugin.config.rules[0].zones == ("a.example.org.", "b.example.org.")


def test_setup_accepts_an_acl_without_rules_which_allows_everything() -> None:
    plugin = load_config(".:53 {\n    acl\n}\n").find("acl")[0]
    assert isinstance(plugin, AclPlugin)
    assert plugin.config.decide("x.", plugin.config.verdicts(1, "192.0.2.1")) == (Action.ALLOW, "")


REJECTED = [
    # (rule line, message, the token the error points at)
    ("block A net 192.168.0.0/16", "unexpected token \"A\"; expect 'type | net'", "A"),
    ("block type net 192.168.0.0/16", 'no token specified in "type" section', "type"),
    ("block type A net", 'no token specified in "net" section', "net"),
    ("block type ABC net 192.168.0.0/16", 'unexpected token "ABC"; expect legal QTYPE', "ABC"),
    ("block type a", 'unexpected token "a"; expect legal QTYPE', "a"),
    ("block type TYPE65", 'unexpected token "TYPE65"; expect legal QTYPE', "TYPE65"),
    (
        "blck type A net 192.168.0.0/16",
        "unexpected token \"blck\"; expect 'allow', 'block', 'filter' or 'drop'",
        "blck",
    ),
    ("block type A net 192.168.0/16", 'illegal CIDR notation "192.168.0/16"', "192.168.0/16"),
    ("block type A net 192.168.0.0/33", 'illegal CIDR notation "192.168.0.0/33"', "192.168"),
    ("block net 10.0.0.0/255.0.0.0", 'illegal CIDR notation "10.0.0.0/255.0.0.0"', "10.0"),
    ("block net fe80::1%eth0", 'illegal CIDR notation "fe80::1%eth0"', "fe80"),
    (
        "block type A net 2001::85a3::8a2e:370:7334",
        'illegal CIDR notation "2001::85a3::8a2e:370:7334"',
        "2001",
    ),
    (
        "block type A net 2001:db8:85a3:::8a2e:370:7334",
        'illegal CIDR notation "2001:db8:85a3:::8a2e:370:7334"',
        "2001",
    ),
]


@pytest.mark.parametrize(("rule", "message", "token"), REJECTED)
def test_setup_rejects_what_coredns_rejects_at_the_token(
    rule: str, message: str, token: str
) -> None:
    text = f".:53 {{\n    acl {{\n        allow net 127.0.0.1\n        {rule}\n    }}\n}}\n"
    with pytest.raises(CorefileError, match=re.escape(message)) as info:
        load_config(text)
    column = text.splitlines()[3].index(token) + 1
    assert str(info.value).startswith(f"Corefile:4:{column} - plugin/acl: ")


# -- Served: actions over UDP and TCP -------------------------------------------------

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


# -- No path around the acl: cache and mesh answers kept in memory (16.7) --------------

KEPT_COREFILE = """\
.:0 {
    bind 127.0.0.1
    acl {
        allow net 127.0.0.2
        block
    }
    cache
    meshhosts {
        10.0.0.1 web.example.org
    }
}
"""


async def test_answers_kept_after_the_acl_never_reach_a_blocked_client() -> None:
    """The fast path belongs to a block's first plugin: with acl there, acl is it."""
    async with serve(KEPT_COREFILE) as server:
        assert server.config is not None
        assert server.config.blocks[0].known is None  # no fast path around the acl
        for proto in ("udp", "tcp"):
            for _ in range(2):  # the first time, then from the cache
                allowed = await ask(server, "web.example.org", source=ALLOWED_CLIENT, proto=proto)
                assert [rr.to_text() for rr in allowed.answer[0]] == ["10.0.0.1"]
            refused = await ask(
                server, "web.example.org", source=OTHER_CLIENT, proto=proto, edns=True
            )
            assert refused.rcode() == dns.rcode.REFUSED and not refused.answer
            assert extended_errors(refused) == [15]


# -- Each query decided and counted once, whether the rest answers now or waits ---------


async def test_each_query_is_counted_once_answered_now_or_after_a_wait() -> None:
    up = Upstream(records={("www.example.org.", "A"): ["192.0.2.1"]}, host="127.0.0.4")
    async with up.running():
        corefile = (
            ".:0 {\n    bind 127.0.0.1\n    acl {\n        block net 127.0.0.3\n    }\n"
            f"    cache\n    forward . {up.address}\n}}\n"
        )
        async with serve(corefile) as server:
            for proto in ("udp", "tcp"):  # a miss that waits for the upstream, then hits
                for _ in range(2):
                    reply = await ask(server, "www.example.org", source=ALLOWED_CLIENT, proto=proto)
                    assert [rr.to_text() for rr in reply.answer[0]] == ["192.0.2.1"]
            refused = await ask(server, "www.example.org", source=OTHER_CLIENT)
            assert refused.rcode() == dns.rcode.REFUSED
            assert server.config is not None
            plugin = server.config.find("acl")[0]
            assert isinstance(plugin, AclPlugin)
            label = server.config.blocks[0].server_label
    assert up.count("www.example.org.", "A") == 1
    assert plugin.counts == {
        (Action.ALLOW, label, ""): 4,
        (Action.BLOCK, label, "."): 1,
    }
