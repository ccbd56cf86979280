"""The byte-level classification of simple replies agrees with the full one."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import dns.rrset
import pytest

from pycorefile_plugins.cache._classify import Category, classify, quick_classify

SOA = "ns.test. host.test. 1 3600 600 86400 60"


def reply(
    qtype: str,
    rcode: int = dns.rcode.NOERROR,
    answer: tuple[tuple[str, str, str], ...] = (),
    authority: tuple[tuple[str, str, str], ...] = (),
    tc: bool = False,
    edns: bool = False,
) -> dns.message.Message:
    q = dns.message.make_query("www.example.test", qtype, use_edns=0 if edns else None)
    r = dns.message.make_response(q)
    r.set_rcode(dns.rcode.Rcode.make(rcode))
    for section, rows in ((r.answer, answer), (r.authority, authority)):
        for owner, rtype, rdata in rows:
            section.append(dns.rrset.from_text(dns.name.from_text(owner), 60, "IN", rtype, rdata))
    if tc:
        r.flags |= dns.flags.TC
    return r


NAME = "www.example.test."
CASES = [
    # (reply, what quick_classify must say: a category, or None for "ask the full rules")
    (reply("A", answer=((NAME, "A", "192.0.2.1"),)), Category.SUCCESS),
    (reply("AAAA", answer=((NAME, "AAAA", "2001:db8::1"),), edns=True), Category.SUCCESS),
    (
        reply(
            "A",
            answer=((NAME, "A", "192.0.2.1"),),
            authority=(("example.test.", "NS", "ns.test."),),
        ),
        Category.SUCCESS,
    ),
    (reply("A", dns.rcode.NXDOMAIN, authority=(("example.test.", "SOA", SOA),)), Category.NXDOMAIN),
    (reply("A", dns.rcode.NXDOMAIN), Category.OTHER),
    (reply("AAAA", authority=(("example.test.", "SOA", SOA),)), Category.NODATA),
    (reply("A"), Category.SUCCESS),
    (reply("A", dns.rcode.SERVFAIL), Category.SERVFAIL),
    (reply("A", dns.rcode.REFUSED), Category.OTHER),
    (reply("A", answer=((NAME, "CNAME", "other.test."), ("other.test.", "A", "192.0.2.9"))), None),
    (reply("A", authority=(("example.test.", "NS", "ns.test."),)), None),
    (reply("MX", answer=((NAME, "MX", "10 mail.test."),)), None),
    (reply("A", answer=((NAME, "A", "192.0.2.1"),), tc=True), None),
]


@pytest.mark.parametrize(("msg", "expected"), CASES)
def test_quick_classify_agrees_with_the_full_rules(
    msg: dns.message.Message, expected: Category | None
) -> None:
    wire = msg.to_wire()
    qtype = msg.question[0].rdtype
    quick = quick_classify(wire, qtype)
    assert quick == expected
    if quick is not None:
        full = classify(dns.message.from_wire(wire), msg.question[0].name, qtype, False, 0.0)
        assert quick == full


@pytest.mark.parametrize("cut", [13, 20, 30, 40, 45])
def test_quick_classify_gives_up_on_cut_replies(cut: int) -> None:
    wire = reply("A", answer=((NAME, "A", "192.0.2.1"), (NAME, "A", "192.0.2.2"))).to_wire()
    assert cut < len(wire)
    assert quick_classify(wire[:cut], 1) is None
