"""The sans-IO wire helpers, table-driven, without sockets."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rrset
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycorefile import _request, _wire
from pycorefile._request import Request
from pycorefile.testing import make_query


def reply_for(
    name: str, *rrs: tuple[str, int, str, str], edns: bool = False
) -> dns.message.Message:
    q = make_query(name, "A", edns=edns)
    r = dns.message.make_response(q, our_payload=4096)
    for owner, ttl, rtype, rdata in rrs:
        r.answer.append(dns.rrset.from_text(dns.name.from_text(owner), ttl, "IN", rtype, rdata))
    return r


READ_QUERY = [
    # (query, edns, payload, do, simple)
    (make_query("example.org", "A"), False, 512, False, True),
    (make_query("example.org", "AAAA", edns=True, payload=4096), True, 4096, False, True),
    (make_query("example.org", "A", edns=True, payload=100), True, 512, False, True),
    (make_query("example.org", "A", do=True), True, 1232, True, True),
]


@pytest.mark.parametrize(("msg", "edns", "payload", "do", "simple"), READ_QUERY)
def test_read_query(
    msg: dns.message.Message, edns: bool, payload: int, do: bool, simple: bool
) -> None:
    wire = msg.to_wire()
    info = _wire.read_query(wire)
    assert info.id == msg.id
    assert info.qdcount == 1
    assert wire[12 : info.name_end] == msg.question[0].name.to_wire()
    assert info.qtype == msg.question[0].rdtype
    assert (info.edns, info.edns_payload, info.do, info.simple) == (edns, payload, do, simple)


def test_read_query_with_edns_option_is_simple() -> None:
    q = dns.message.make_query(
        "example.org", "A", use_edns=0, options=[dns.edns.CookieOption(b"12345678", b"")]
    )
    info = _wire.read_query(q.to_wire())
    assert info.edns and info.simple


def test_read_query_rejects_short_and_broken_packets() -> None:
    with pytest.raises(_wire.WireError):
        _wire.read_query(b"\x00" * 11)
    header = struct.pack(">HHHHHH", 1, 0, 1, 0, 0, 0)
    with pytest.raises(_wire.QuestionError):
        _wire.read_query(header + b"\x05abc")
    with pytest.raises(_wire.QuestionError):
        _wire.read_query(header + b"\xc0\x0c\x00\x01\x00\x01")  # compression in a question


def test_request_key_ignores_case_but_not_do_cd() -> None:
    a = Request.from_wire(make_query("WWW.Example.ORG", "A").to_wire())
    b = Request.from_wire(make_query("www.example.org", "A", edns=True).to_wire())
    c = Request.from_wire(make_query("www.example.org", "A", do=True).to_wire())
    d = Request.from_wire(make_query("www.example.org", "A", cd=True).to_wire())
    e = Request.from_wire(make_query("www.example.org", "AAAA").to_wire())
    assert a.key == b.key
    assert len({a.key, c.key, d.key, e.key}) == 4
    assert a.name == "www.example.org."


def test_error_reply_echoes_and_extends() -> None:
    q = make_query("Example.org", "A", edns=True, do=True)
    q.id = 999
    wire = q.to_wire()
    out = dns.message.from_wire(_wire.error_reply(wire, _wire.read_query(wire), 16))
    assert out.id == 999
    assert out.rcode() == dns.rcode.BADVERS
    assert out.question[0].name.to_text() == "Example.org."
    assert out.payload == 1232 and out.ednsflags & dns.flags.DO
    plain = make_query("example.org", "A").to_wire()
    out = dns.message.from_wire(_wire.error_reply(plain, _wire.read_query(plain), 5))
    assert out.rcode() == dns.rcode.REFUSED and out.edns == -1


@pytest.mark.parametrize(
    ("size", "limit", "tc"), [(5, 512, False), (10, 512, True), (30, 1232, True), (15, 1232, False)]
)
def test_fit_reply(size: int, limit: int, tc: bool) -> None:
    r = reply_for("example.org")
    r.answer.append(
        dns.rrset.from_text(
            "example.org.", 60, "IN", "TXT", *[f'"{i}{"y" * 60}"' for i in range(size)]
        )
    )
    wire = r.to_wire()
    out = _wire.fit_reply(wire, limit)
    assert len(out) <= limit
    assert bool(dns.message.from_wire(out).flags & dns.flags.TC) == tc
    if not tc:
        assert out == wire


def test_strip_opt_and_ttl_offsets() -> None:
    r = reply_for(
        "example.org",
        ("example.org", 300, "A", "192.0.2.1"),
        ("example.org", 60, "A", "192.0.2.2"),
        edns=True,
    )
    r.answer.append(dns.rrset.from_text("example.org.", 42, "IN", "TXT", '"hi"'))
    wire = r.to_wire()
    stripped = _wire.strip_opt(wire)
    assert dns.message.from_wire(stripped).edns == -1
    offsets, ttls = _wire.ttl_offsets(stripped)
    assert sorted(ttls) == [42, 60, 300]  # every record keeps its own TTL
    for off, ttl in zip(offsets, ttls, strict=True):
        assert struct.unpack_from(">I", stripped, off)[0] == ttl


def test_prepared_reply_patches_id_case_ttl_and_opt() -> None:
    stored = reply_for("www.example.org", ("www.example.org", 300, "A", "192.0.2.1"), edns=True)
    prepared = _wire.PreparedReply(stored.to_wire())
    q = make_query("WWW.example.ORG", "A", edns=True, do=True)
    q.id = 31337
    wire = q.to_wire()
    info = _wire.read_query(wire)
    out = dns.message.from_wire(prepared.aged(100).render(wire, info.name_end, info.edns, info.do))
    assert out.id == 31337
    assert out.question[0].name.to_text() == "WWW.example.ORG."
    assert out.answer[0].name.to_text() == "WWW.example.ORG."  # owner points at the question
    assert out.answer[0].ttl == 200
    assert out.payload == 1232 and out.ednsflags & dns.flags.DO
    plain = make_query("www.example.org", "A").to_wire()
    info = _wire.read_query(plain)
    out = dns.message.from_wire(prepared.aged(400).render(plain, info.name_end, info.edns, info.do))
    assert out.edns == -1
    assert out.answer[0].ttl == 0


@pytest.mark.parametrize("edns", [False, True])
@pytest.mark.parametrize("rd", [False, True])
@pytest.mark.parametrize("cd", [False, True])
def test_prepared_reply_mirrors_rd_cd_and_edns(edns: bool, rd: bool, cd: bool) -> None:
    stored = reply_for("a.example", ("a.example", 60, "A", "192.0.2.1"))
    stored.answer.append(dns.rrset.from_text("a.example.", 30, "IN", "TXT", '"t"'))
    stored.flags |= dns.flags.RD | dns.flags.CD  # the stored bits never leak
    prepared = _wire.PreparedReply(stored.to_wire())
    query = make_query("A.example", "A", edns=edns, rd=rd, cd=cd).to_wire()
    info = _wire.read_query(query)
    out = dns.message.from_wire(prepared.render(query, info.name_end, info.edns, info.do))
    assert bool(out.flags & dns.flags.RD) == rd
    assert bool(out.flags & dns.flags.CD) == cd
    assert (out.edns == 0) == edns
    assert out.question[0].name.to_text() == "A.example."
    assert [rrset.ttl for rrset in out.answer] == [60, 30]
    assert prepared.ttls == [60, 30] and prepared.min_ttl == 30 and prepared.rcode == 0


def test_prepared_reply_ages_and_pins_every_record() -> None:
    stored = reply_for("a.example", ("a.example", 60, "A", "192.0.2.1"))
    stored.answer.append(dns.rrset.from_text("a.example.", 5, "IN", "TXT", '"t"'))
    prepared = _wire.PreparedReply(stored.to_wire())
    assert prepared.aged(10).ttls == [50, 0]  # never below 0
    assert prepared.with_ttl(30).ttls == [30, 30]
    assert prepared.ttls == [60, 5]  # copies: the original is unchanged
    query = make_query("a.example", "A").to_wire()
    info = _wire.read_query(query)
    out = dns.message.from_wire(prepared.aged(10).render(query, info.name_end, False, False))
    assert [rrset.ttl for rrset in out.answer] == [50, 0]


def test_parse_memo_shares_fields_between_names_of_one_shape() -> None:
    first = make_query("aa.example", "A")
    second = make_query("bb.example", "A")
    first.id, second.id = 1000, 2000
    a = Request.from_wire(first.to_wire())
    b = Request.from_wire(second.to_wire())
    again = make_query("aa.example", "A")
    again.id = 3000
    c = Request.from_wire(again.to_wire())
    assert (a.id, b.id, c.id) == (1000, 2000, 3000)  # the ID is always the packet's
    assert a.key != b.key and a.key is c.key
    first_fields = _request.parse_question(first.to_wire())[0]
    assert first_fields is _request.parse_question(second.to_wire())[0]


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_read_query_only_raises_wire_errors(data: bytes) -> None:
    try:
        info = _wire.read_query(data)
    except _wire.WireError:
        return
    assert info.name_end <= len(data)
    _wire.error_reply(data, info, dns.rcode.FORMERR)
