"""forward's sans-IO wire code: which replies are accepted, and what the client gets."""

from __future__ import annotations

import dns.edns
import dns.flags
import dns.message
import dns.rcode
import dns.rrset
import pytest

from pycorefile._wire import read_query
from pycorefile.testing import make_query
from pycorefile_plugins.forward._message import (
    Question,
    check_reply,
    client_reply,
    probe_query,
    rcode_label,
    with_id,
)

QID = 0x4242


def asked(name: str = "www.example.org.", edns: bool = False) -> dns.message.Message:
    q = make_query(name, "A", edns=edns)
    q.id = QID
    return q


def answer(q: dns.message.Message, *, payload: int | None = None) -> dns.message.Message:
    r = dns.message.make_response(q)
    if payload is not None:
        r.use_edns(0, payload=payload)
    r.answer.append(dns.rrset.from_text(q.question[0].name, 60, "IN", "A", "192.0.2.1"))
    return r


def question_of(q: dns.message.Message) -> Question:
    return Question.of(q.to_wire())


def test_the_right_reply_is_accepted_whatever_its_letter_case() -> None:
    q = asked()
    r = answer(asked("WWW.EXAMPLE.ORG."))
    checked = check_reply(r.to_wire(), QID, question_of(q))
    assert checked is not None
    assert checked.rcode == dns.rcode.NOERROR and not checked.truncated


def mutate(wire: bytes, at: int, value: int) -> bytes:
    return wire[:at] + bytes([value]) + wire[at + 1 :]


@pytest.mark.parametrize(
    "spoil",
    [
        pytest.param(lambda w: with_id(w, QID + 1), id="other ID"),
        pytest.param(lambda w: mutate(w, 2, w[2] & 0x7F), id="no QR bit"),
        pytest.param(lambda w: w[:11], id="shorter than a header"),
        pytest.param(lambda w: w[:-3], id="record cut short"),
        pytest.param(lambda w: mutate(w, 5, 2), id="two questions"),
        pytest.param(lambda w: mutate(w, 13, ord("x")), id="other name"),
        pytest.param(lambda w: w.replace(b"\x00\x01\x00\x01", b"\x00\x1c\x00\x01", 1), id="type"),
        pytest.param(lambda w: mutate(w, 7, 5), id="more records than sent"),
    ],
)
def test_mismatched_or_broken_replies_are_dropped(spoil: object) -> None:
    q = asked()
    wire = answer(q).to_wire()
    assert check_reply(wire, QID, question_of(q)) is not None
    assert check_reply(spoil(wire), QID, question_of(q)) is None  # type: ignore[operator]


def test_an_error_without_question_is_accepted_but_an_answer_is_not() -> None:
    q = asked()
    bare = dns.message.Message(id=QID)
    bare.flags |= dns.flags.QR
    bare.set_rcode(dns.rcode.FORMERR)
    checked = check_reply(bare.to_wire(), QID, question_of(q))
    assert checked is not None and not checked.has_question
    assert checked.rcode == dns.rcode.FORMERR
    bare.set_rcode(dns.rcode.NOERROR)
    assert check_reply(bare.to_wire(), QID, question_of(q)) is None


def test_extended_rcode_and_truncation_are_read() -> None:
    q = asked(edns=True)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.BADCOOKIE)
    r.flags |= dns.flags.TC
    checked = check_reply(r.to_wire(), QID, question_of(q))
    assert checked is not None
    assert checked.rcode == dns.rcode.BADCOOKIE and checked.truncated


def test_two_opt_records_are_malformed() -> None:
    q = asked(edns=True)
    wire = answer(q, payload=4096).to_wire()
    opt = wire[-11:]
    doubled = wire[:10] + (2).to_bytes(2, "big") + wire[12:] + opt
    assert check_reply(doubled, QID, question_of(q)) is None


def test_client_gets_its_id_its_case_and_our_payload() -> None:
    q = asked("WwW.ExAmPlE.oRg.", edns=True)
    q.id = 0x0102
    query = q.to_wire()
    upstream = answer(asked(edns=True), payload=4096).to_wire() + b"trailing junk"
    checked = check_reply(upstream, QID, Question.of(query))
    assert checked is not None
    out = client_reply(upstream, checked, query, read_query(query).name_end, True)
    msg = dns.message.from_wire(out)
    assert msg.id == 0x0102
    assert msg.question[0].name.to_text() == "WwW.ExAmPlE.oRg."
    assert msg.payload == 1232
    assert [rd.to_text() for rrset in msg.answer for rd in rrset] == ["192.0.2.1"]


def test_opt_is_removed_when_the_client_sent_none() -> None:
    q = asked()
    query = q.to_wire()
    upstream = answer(asked(), payload=4096)
    upstream.additional.append(dns.rrset.from_text("ns.example.org.", 60, "IN", "A", "192.0.2.53"))
    wire = upstream.to_wire()
    checked = check_reply(wire, QID, Question.of(query))
    assert checked is not None and checked.opt_start
    msg = dns.message.from_wire(
        client_reply(wire, checked, query, read_query(query).name_end, False)
    )
    assert msg.edns == -1
    assert [rrset.name.to_text() for rrset in msg.additional] == ["ns.example.org."]


def test_probe_query() -> None:
    rec = dns.message.from_wire(probe_query(".", 2, True))
    norec = dns.message.from_wire(probe_query("probe.test.", 2, False))
    assert rec.flags & dns.flags.RD and rec.question[0].name.to_text() == "."
    assert not norec.flags & dns.flags.RD and rec.edns == -1


def test_rcode_labels() -> None:
    assert rcode_label(3) == "NXDOMAIN"
    assert rcode_label(4000) == "RCODE4000"
