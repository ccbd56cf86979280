"""The greeting plugin, parsed alone and served for real."""

from __future__ import annotations

import dns.rcode
import pytest
from pycorefile_greeting import GreetingConfig, parse_greeting

from pycorefile import Directive, SetupError
from pycorefile.testing import query, serve


def directive(*args: str, block: tuple[Directive, ...] | None = None) -> Directive:
    return Directive("greeting", args, "Corefile", 1, 1, block)


@pytest.mark.parametrize(
    ("d", "expected"),
    [
        (directive("hi"), GreetingConfig("hi", frozenset({"example.org."}))),
        (directive("hi", "A.test"), GreetingConfig("hi", frozenset({"a.test."}))),
        (
            directive("hi", block=(Directive("ttl", ("5",), "Corefile", 2, 5),)),
            GreetingConfig("hi", frozenset({"example.org."}), 5),
        ),
    ],
)
def test_parse(d: Directive, expected: GreetingConfig) -> None:
    assert parse_greeting([d], ["example.org."]) == expected


def test_parse_errors_point_at_the_option() -> None:
    with pytest.raises(SetupError, match="unknown property 'colour'"):
        parse_greeting(
            [directive("hi", block=(Directive("colour", ("red",), "Corefile", 2, 5),))], []
        )
    with pytest.raises(SetupError, match="Wrong argument count"):
        parse_greeting([directive()], [])


COREFILE = """\
example.org:0 {
    bind 127.0.0.1
    greeting "hello, world"
    whoami
}
"""


@pytest.mark.parametrize(
    ("name", "rdtype", "rcode", "text"),
    [
        ("example.org", "TXT", dns.rcode.NOERROR, "hello, world"),
        ("EXAMPLE.org", "TXT", dns.rcode.NOERROR, "hello, world"),
        ("example.org", "A", dns.rcode.NOERROR, None),  # passed on to whoami
    ],
)
@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_served(name: str, rdtype: str, rcode: int, text: str | None, proto: str) -> None:
    async with serve(COREFILE) as server:
        reply = await query(server, name, rdtype, proto=proto)
    assert reply.rcode() == rcode
    if text is None:
        assert not reply.answer and reply.additional  # whoami answered
    else:
        assert reply.answer[0][0].strings == (text.encode(),)
        assert reply.answer[0].name.to_text() == name + "."
