"""view: server blocks that serve only the queries their expressions admit (split DNS)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import dns.asyncquery
import dns.message
import dns.rcode
import pytest
import trio

from pycorefile import CorefileError, load_config
from pycorefile.testing import Upstream, make_query, scrape, serve
from pycorefile_plugins.view import ExpressionError, compile_expression
from pycorefile_plugins.view._env import SIGNATURES, incidr

# -- The expression language, without sockets -----------------------------------------

Environment = dict[str, Callable[..., object]]


def environment(**values: object) -> Environment:
    env: Environment = {name: (lambda value=value: value) for name, value in values.items()}
    env["incidr"] = incidr
    return env


QUERY = environment(
    type="A", name="abc.x.example.com.", client_ip="127.0.0.2", size=40, do=False, port="5353"
)

HOLDS = [
    ("type() in ['A', 'AAAA']", True),
    ("type() not in ['A', 'AAAA']", False),
    (r"name() matches '^abc\\..*\\.example\\.com\\.$'", True),
    (r"name() matches '^xyz\\.'", False),
    ("incidr(client_ip(), '127.0.0.0/24')", True),
    ("incidr(client_ip(), '127.0.0.3/32')", False),
    ("incidr(client_ip(), '127.0.0.9/24')", True),  # host bits allowed, as Go's ParseCIDR
    ("(type() == 'A' && name() == 'example.com.') || client_ip() == '1.2.3.4'", False),
    ("type() == 'A' and not (name() endsWith '.org.')", True),
    ("!do() && size() >= 40", True),
    ("name() startsWith 'abc.' && name() contains '.x.'", True),
    ("port() == '5353'", True),
    ("any(['a', 'b'], {# == 'b'}) && count([1, 2, 3], {# > 1}) == 2", True),
    ("len(name()) > 3 ? type() == 'A' : false", True),
    ("1 + 2 * 3 == 7 && 7 % 4 == 3 && -size() < 0", True),
    ("lower('AbC') + upper('d') == 'abcD'", True),
    # An error while evaluating makes the expression false, as in CoreDNS.
    ("incidr(client_ip(), 'not a cidr')", False),
    ("incidr('no ip', '10.0.0.0/8') || true", False),
]


@pytest.mark.parametrize(("text", "expected"), HOLDS)
def test_expressions_evaluate_as_expr_lang(text: str, expected: bool) -> None:
    assert compile_expression(text, SIGNATURES)(QUERY) is expected


REFUSED = [
    ("client_ip() == 1", "mismatched types str and int", 13),
    ("foo()", "unknown function foo", 1),
    ("type()", "the expression must be bool", 1),
    ("type(1)", "type takes 0 argument(s), not 1", 1),
    ("incidr(client_ip())", "incidr takes 2 argument(s), not 1", 1),
    ("name() matches '(?=x)'", "look-around is not supported", 16),
    ("name() matches '(x'", "bad regular expression", 16),
    ("type() == 'A' &&", "unexpected end of expression", 17),
    ("#", "only allowed in a predicate", 1),
    ("size() + 'a' == 1", "mismatched types int and str", 8),
    ("client_ip", "unknown name client_ip", 1),
    ("type() == 'A' $", "unexpected character '$'", 15),
]


@pytest.mark.parametrize(("text", "message", "column"), REFUSED)
def test_mistakes_are_refused_at_setup_with_their_column(
    text: str, message: str, column: int
) -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text, SIGNATURES)
    assert message in str(caught.value)
    assert caught.value.column + 1 == column


def test_a_mapped_ipv4_client_matches_an_ipv4_range() -> None:
    assert incidr("::ffff:10.1.2.3", "10.0.0.0/8")
    assert not incidr("::ffff:10.1.2.3", "11.0.0.0/8")
    assert incidr("2001:db8::1", "2001:db8::/32")


# -- Setup errors, as a Corefile user sees them -----------------------------------------


@pytest.mark.parametrize(
    ("corefile", "message", "line", "column"),
    [
        (". {\n  view v {\n    expr client_ip() == 1\n  }\n  whoami\n}\n", "mismatched", 3, 22),
        (". {\n  view v {\n    expr type() == 'A' &&\n  }\n  whoami\n}\n", "end of expr", 3, 24),
        (". {\n  view {\n    expr true\n  }\n  whoami\n}\n", "Wrong argument count", 2, 3),
        (". {\n  view v {\n    exp true\n  }\n  whoami\n}\n", "unknown property 'exp'", 3, 5),
        (". {\n  view a\n  view b\n  whoami\n}\n", "only be used once per Server Block", 3, 3),
    ],
)
def test_setup_errors_name_file_line_and_column(
    corefile: str, message: str, line: int, column: int
) -> None:
    with pytest.raises(CorefileError) as caught:
        load_config(corefile, "Corefile")
    text = str(caught.value)
    assert message in text, text
    assert text.startswith(f"Corefile:{line}:{column}"), text


def test_two_unfiltered_blocks_for_one_zone_are_still_an_error() -> None:
    with pytest.raises(CorefileError, match="already defined"):
        load_config(". {\n  whoami\n}\n. {\n  whoami\n}\n", "Corefile")


def test_a_block_shadowed_by_an_earlier_catch_all_is_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    corefile = ". {\n  whoami\n}\n. {\n  view v {\n    expr true\n  }\n  whoami\n}\n"
    with caplog.at_level(logging.WARNING, logger="pycorefile"):
        load_config(corefile, "Corefile")
    assert any("never used" in r.getMessage() for r in caplog.records)


# -- Serving: split DNS on the real server ------------------------------------------------


async def ask(port: int, name: str, rdtype: str = "A", source: str = "127.0.0.1",
              proto: str = "udp") -> dns.message.Message:  # fmt: skip
    q = make_query(name, rdtype)
    if proto == "tcp":
        return await dns.asyncquery.tcp(q, "127.0.0.1", timeout=5, port=port, source=source)
    return await dns.asyncquery.udp(q, "127.0.0.1", timeout=5, port=port, source=source)


def answer_of(reply: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


def upstream(host: str, address: str) -> Upstream:
    return Upstream(
        records={("test.", "A"): [address], ("test.", "AAAA"): ["2001:db8::" + address[-1]]},
        host=host,
    )


async def test_blocks_are_tried_in_corefile_order_and_the_first_admitting_one_answers() -> None:
    near, typed, rest = (
        upstream("127.0.0.11", "192.0.2.1"),
        upstream("127.0.0.12", "192.0.2.2"),
        upstream("127.0.0.13", "192.0.2.3"),
    )
    async with near.running(), typed.running(), rest.running():
        corefile = f"""
. {{
  view near {{
    expr incidr(client_ip(), '127.0.0.2/32')
  }}
  forward . {near.address}
}}
. {{
  view typed {{
    expr type() in ['AAAA']
    expr name() == 'test.'
  }}
  forward . {typed.address}
}}
. {{
  forward . {rest.address}
}}
"""
        async with serve(corefile) as server:
            port = server.port()
            assert answer_of(await ask(port, "test.", source="127.0.0.2")) == ["192.0.2.1"]
            assert answer_of(await ask(port, "test.", proto="tcp", source="127.0.0.2")) == [
                "192.0.2.1"
            ]
            assert answer_of(await ask(port, "test.", "AAAA")) == ["2001:db8::2"]
            assert answer_of(await ask(port, "test.")) == ["192.0.2.3"]
            # Both expressions of a view must hold: another name is not "typed".
            other = await ask(port, "other.", "AAAA")
            assert other.rcode() == dns.rcode.NXDOMAIN
            assert typed.count("other.") == 0 and rest.count("other.") == 1
            # The near client asks AAAA: its own view comes first.
            assert answer_of(await ask(port, "test.", "AAAA", source="127.0.0.2")) == [
                "2001:db8::1"
            ]


async def test_no_admitting_block_for_a_zone_falls_back_to_a_less_specific_zone() -> None:
    rest = upstream("127.0.0.13", "192.0.2.3")
    async with rest.running():
        corefile = f"""
example.org {{
  view never {{
    expr name() == 'nothing.'
  }}
  whoami
}}
. {{
  forward . {rest.address}
}}
"""
        async with serve(corefile) as server:
            reply = await ask(server.port(), "www.example.org.")
            assert reply.rcode() == dns.rcode.NXDOMAIN  # the upstream's answer, not whoami's
            assert rest.count("www.example.org.") == 1


async def test_a_query_no_block_admits_is_refused() -> None:
    corefile = ". {\n  view none {\n    expr type() == 'MX'\n  }\n  whoami\n}\n"
    async with serve(corefile) as server:
        refused = await ask(server.port(), "example.org.")
        assert refused.rcode() == dns.rcode.REFUSED
        admitted = await ask(server.port(), "example.org.", "MX")
        assert admitted.rcode() == dns.rcode.NOERROR
        assert admitted.additional  # whoami answered


async def test_cached_answers_stay_in_their_view() -> None:
    # Each view has its own cache: a cache hit (the fast path) of one view is never
    # served to a client of the other.
    near, rest = upstream("127.0.0.11", "192.0.2.1"), upstream("127.0.0.13", "192.0.2.3")
    async with near.running(), rest.running():
        corefile = f"""
. {{
  view near {{
    expr incidr(client_ip(), '127.0.0.2/32')
  }}
  cache
  forward . {near.address}
}}
. {{
  cache
  forward . {rest.address}
}}
"""
        async with serve(corefile) as server:
            port = server.port()
            for _ in range(3):
                assert answer_of(await ask(port, "test.", source="127.0.0.2")) == ["192.0.2.1"]
                assert answer_of(await ask(port, "test.")) == ["192.0.2.3"]
            assert near.count("test.") == 1 and rest.count("test.") == 1


async def test_metrics_carry_the_view_label() -> None:
    corefile = """
. {
  view mx {
    expr type() == 'MX'
  }
  prometheus 127.0.0.1:0
  whoami
}
. {
  prometheus 127.0.0.1:0
  whoami
}
"""
    async with serve(corefile) as server:
        port = server.port()
        for _ in range(2):
            await ask(port, "example.org.", "MX")
        await ask(port, "example.org.", "A")
        with trio.fail_after(10):
            metrics = await scrape(server)
        mx = metrics.value(
            "coredns_dns_requests_total", view="mx", zone=".", type="MX", proto="udp"
        )
        plain = metrics.value("coredns_dns_requests_total", view="", zone=".", type="A")
        assert (mx, plain) == (2, 1)
