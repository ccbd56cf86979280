"""pycorefile.response: the record walker and CoreDNS's reply types, on wire bytes."""

from __future__ import annotations

import calendar
import time

import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

from pycorefile.response import (
    ADDITIONAL,
    ANSWER,
    AUTHORITY,
    TTL_BEFORE_RDATA,
    ReplyClass,
    ReplyType,
    WireError,
    question_end,
    records,
    reply_class,
    typify,
)

# CoreDNS's TestTypifyRRSIG judges its signatures at this moment.
APRIL_2017 = float(calendar.timegm(time.strptime("2017-04-21 09:51:21", "%Y-%m-%d %H:%M:%S")))
SIG_OK = (
    "miek.nl. 1800 IN RRSIG NS 8 2 1800 20170521031301 20170421031301 12051 miek.nl. "
    "PIUu3TKX/sB/N1n1E1yWxHHIcPnc2q6Wq9InShk+5ptRqChqKdZNMLDmgCq+1bQAZ7jGvn2PbwTwE65JzES7T+hE"
)
SIG_OLD = SIG_OK.replace("20170521031301 20170421031301", "20160521031301 20160421031301")


def reply(
    qname: str = "example.org.",
    qtype: str = "A",
    *,
    rcode: int = dns.rcode.NOERROR,
    answer: tuple[str, ...] = (),
    authority: tuple[str, ...] = (),
    additional: tuple[str, ...] = (),
    do: bool | None = None,
    opcode: int = dns.opcode.QUERY,
    question: bool = True,
) -> bytes:
    """A reply's wire bytes: records as zone-file lines; ``do`` not None adds an OPT record."""
    msg = dns.message.Message(id=7)
    msg.flags = dns.flags.QR
    msg.set_opcode(dns.opcode.Opcode.make(opcode))
    if question:
        msg.question.append(
            dns.rrset.RRset(
                dns.name.from_text(qname), dns.rdataclass.IN, dns.rdatatype.from_text(qtype)
            )
        )
    for section, lines in (
        (msg.answer, answer),
        (msg.authority, authority),
        (msg.additional, additional),
    ):
        for line in lines:
            name, ttl, rdclass, rdtype, rdata = line.split(None, 4)
            section.append(dns.rrset.from_text(name, int(ttl), rdclass, rdtype, rdata))
    if do is not None:
        msg.use_edns(0, dns.flags.DO if do else 0, 1232)
    msg.set_rcode(dns.rcode.Rcode.make(rcode))
    return msg.to_wire()


DELEGATION = (
    "miek.nl. 3600 IN NS linode.atoom.net.",
    "miek.nl. 3600 IN NS ns-ext.nlnetlabs.nl.",
    "miek.nl. 3600 IN NS omval.tednet.nl.",
)
GLUE = (
    "omval.tednet.nl. 3600 IN A 185.49.141.42",
    "omval.tednet.nl. 3600 IN AAAA 2a04:b900:0:100::42",
)
SOA = ("example.org. 300 IN SOA ns.example.org. admin.example.org. 1 7200 3600 1209600 60",)
A = ("example.org. 300 IN A 192.0.2.1",)

TYPIFY_CASES: list[tuple[str, bytes, ReplyType]] = [
    # CoreDNS's typify_test.go
    ("nil message (nothing sent)", b"", ReplyType.OTHERERROR),
    ("delegation", reply(authority=DELEGATION, additional=GLUE), ReplyType.DELEGATION),
    (
        "delegation, valid signature",
        reply(authority=(*DELEGATION, SIG_OK), additional=GLUE),
        ReplyType.DELEGATION,
    ),
    (
        "delegation, expired signature, no DO: not judged",
        reply(authority=(*DELEGATION, SIG_OLD), additional=GLUE),
        ReplyType.DELEGATION,
    ),
    (
        "delegation, expired signature, DO",
        reply(authority=(*DELEGATION, SIG_OLD), additional=GLUE, do=True),
        ReplyType.OTHERERROR,
    ),
    (
        "impossible: NXDOMAIN with a CNAME for the name",
        reply(
            "bar.www.example.org.",
            "AAAA",
            rcode=dns.rcode.NXDOMAIN,
            answer=("bar.www.example.org. 300 IN CNAME foo.example.org.",),
        ),
        ReplyType.OTHERERROR,
    ),
    ("refused", reply(rcode=dns.rcode.REFUSED), ReplyType.OTHERERROR),
    (
        "NXDOMAIN without SOA",
        reply("1.1.168.192.in-addr.arpa.", "PTR", rcode=dns.rcode.NXDOMAIN),
        ReplyType.NXDOMAIN,
    ),
    # the other branches of Typify
    ("answer", reply(answer=A), ReplyType.NOERROR),
    ("empty NOERROR", reply(), ReplyType.NOERROR),
    ("NODATA", reply(authority=SOA), ReplyType.NODATA),
    ("NXDOMAIN with SOA", reply(rcode=dns.rcode.NXDOMAIN, authority=SOA), ReplyType.NXDOMAIN),
    ("SERVFAIL", reply(rcode=dns.rcode.SERVFAIL), ReplyType.SERVERERROR),
    ("NOTIMP", reply(rcode=dns.rcode.NOTIMP), ReplyType.SERVERERROR),
    ("FORMERR", reply(rcode=dns.rcode.FORMERR), ReplyType.OTHERERROR),
    (
        "BADVERS: the OPT record's upper rcode bits count",
        reply(rcode=16, do=False),
        ReplyType.OTHERERROR,
    ),
    ("SOA wins over NS", reply(authority=(*SOA, *DELEGATION)), ReplyType.NODATA),
    ("NS in the answer is an answer", reply(answer=DELEGATION), ReplyType.NOERROR),
    ("NS in the additional section is nothing", reply(additional=DELEGATION), ReplyType.NOERROR),
    ("AXFR", reply(qtype="AXFR", answer=SOA), ReplyType.META),
    ("IXFR", reply(qtype="IXFR", answer=SOA), ReplyType.META),
    ("NOTIFY", reply(opcode=dns.opcode.NOTIFY), ReplyType.META),
    ("UPDATE", reply(opcode=dns.opcode.UPDATE), ReplyType.UPDATE),
    ("no question", reply(rcode=dns.rcode.SERVFAIL, question=False), ReplyType.SERVERERROR),
    ("SERVFAIL with answers", reply(rcode=dns.rcode.SERVFAIL, answer=A), ReplyType.SERVERERROR),
    (
        "NXDOMAIN with answers, no OPT",
        reply(rcode=dns.rcode.NXDOMAIN, answer=A),
        ReplyType.OTHERERROR,
    ),
    ("valid signature, DO", reply(answer=A, authority=(SIG_OK,), do=True), ReplyType.NOERROR),
]


@pytest.mark.parametrize(
    ("wire", "expected"),
    [case[1:] for case in TYPIFY_CASES],
    ids=[case[0] for case in TYPIFY_CASES],
)
def test_typify_as_coredns(wire: bytes, expected: ReplyType) -> None:
    assert typify(wire, APRIL_2017) is expected


def test_a_signature_is_judged_at_the_time_given() -> None:
    wire = reply(authority=(*DELEGATION, SIG_OK), do=True)
    assert typify(wire, APRIL_2017) is ReplyType.DELEGATION
    assert typify(wire, APRIL_2017 + 60 * 86400) is ReplyType.OTHERERROR  # after 2017-05-21
    assert typify(wire, APRIL_2017 - 86400) is ReplyType.OTHERERROR  # before its inception
    assert typify(wire) is ReplyType.OTHERERROR  # now: long expired


def test_a_reply_cut_short_is_judged_by_what_could_be_read() -> None:
    wire = reply(rcode=dns.rcode.NXDOMAIN, authority=SOA)
    assert typify(wire[:-10]) is ReplyType.NXDOMAIN  # the SOA is cut: still NXDOMAIN
    nodata = reply(authority=SOA)
    assert typify(nodata[: question_end(nodata)]) is ReplyType.NOERROR  # the SOA never read
    assert typify(wire[:11]) is ReplyType.OTHERERROR


@pytest.mark.parametrize(
    ("reply_type", "expected"),
    [
        (ReplyType.NOERROR, ReplyClass.SUCCESS),
        (ReplyType.DELEGATION, ReplyClass.SUCCESS),
        (ReplyType.NXDOMAIN, ReplyClass.DENIAL),
        (ReplyType.NODATA, ReplyClass.DENIAL),
        (ReplyType.SERVERERROR, ReplyClass.ERROR),
        (ReplyType.META, ReplyClass.ERROR),
        (ReplyType.UPDATE, ReplyClass.ERROR),
        (ReplyType.OTHERERROR, ReplyClass.ERROR),
    ],
)
def test_reply_class_as_coredns_classify(reply_type: ReplyType, expected: ReplyClass) -> None:
    assert reply_class(reply_type) is expected


def test_types_and_classes_print_as_coredns_names_them() -> None:
    assert f"{ReplyType.SERVERERROR} {reply_class(ReplyType.NODATA)}" == "SERVERERROR denial"
    assert "denial" in frozenset({ReplyClass.DENIAL})


def test_records_match_what_dnspython_reads() -> None:
    wire = reply(answer=A, authority=(*SOA, SIG_OK), additional=GLUE, do=True)
    msg = dns.message.from_wire(wire)
    expected = [
        (section, rrset.rdtype, rrset.rdclass, rrset.ttl)
        for section, rrsets in (
            (ANSWER, msg.answer),
            (AUTHORITY, msg.authority),
            (ADDITIONAL, msg.additional),
        )
        for rrset in rrsets
        for _ in rrset
    ]
    walked = list(records(wire))
    opt = walked.pop()
    assert [(s, t, c, ttl) for s, t, c, ttl, *_ in walked] == expected
    assert opt[:3] == (ADDITIONAL, dns.rdatatype.OPT, 1232)
    assert opt[3] & 0x8000  # DO
    for _section, _rtype, _rclass, ttl, name_at, rdata_at, _rdata_end in walked:
        assert int.from_bytes(wire[rdata_at - TTL_BEFORE_RDATA : rdata_at - 2], "big") == ttl
        owner, _ = dns.name.from_wire(wire, name_at)
        assert owner.is_absolute()
    addresses = [wire[at:end] for _, rtype, _, _, _, at, end in walked if rtype == dns.rdatatype.A]
    assert addresses == [bytes([192, 0, 2, 1]), bytes([185, 49, 141, 42])]
    assert walked[-1][6] == opt[4]  # the records follow each other


def test_records_start_where_the_caller_says() -> None:
    wire = reply(answer=A)
    assert list(records(wire, question_end(wire))) == list(records(wire))


@pytest.mark.parametrize("cut", [1, 5, 11, 12])
def test_a_record_cut_short_raises_after_the_whole_ones(cut: int) -> None:
    wire = reply(answer=A, authority=SOA)
    whole = list(records(wire))
    walked: list[tuple[int, ...]] = []
    with pytest.raises(WireError):
        for record in records(wire[:-cut]):
            walked.append(record)
    assert walked == whole[: len(walked)]
    assert len(walked) == len(whole) - 1


def test_a_message_shorter_than_a_header_raises() -> None:
    with pytest.raises(WireError):
        list(records(b"\x00" * 11))
    with pytest.raises(WireError):
        question_end(b"\x00" * 11)
