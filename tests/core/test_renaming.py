"""pycorefile.rename: names renamed by suffix both ways, and replies renamed back on their
bytes and on the parsed message (the same answer either way)."""

from __future__ import annotations

from collections.abc import Callable

import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from pycorefile import Pending, Request, Result, settle
from pycorefile.rename import SuffixRename, ask_renamed, rename_message, rename_wire
from pycorefile.testing import NextHandler, make_request


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def wire(text: str) -> bytes:
    return name(text).to_wire() or b""


def texts(msg: dns.message.Message) -> list[str]:
    """Every record of the answer section as text, in order."""
    return [f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd}" for rrset in msg.answer
            for rd in rrset]  # fmt: skip


def test_rule_covers_names_at_or_under_its_source_only() -> None:
    rename = SuffixRename(name("old.test."), name("new.test."))
    assert rename.covers(wire("old.test.")) and rename.covers(wire("www.old.test."))
    assert not rename.covers(wire("xold.test.")) and not rename.covers(wire("test."))
    # One label "a\x03old" whose last bytes look like the suffix: not under old.test.
    assert not rename.covers(wire("a\\003old.test."))
    assert wire("a\\003old.test.").endswith(wire("old.test."))
    assert SuffixRename(name("."), name("new.test.")).covers(wire("anything.example."))


# -- The reply renamed on its bytes, and on the parsed message: the same answer ----------

SOA = "new.test. 60 IN SOA ns.new.test. admin.new.test. 1 3600 600 86400 60"
REPLIES: list[tuple[str, str, str, list[str], list[str]]] = [
    # (rename, asked, renamed, answer records, authority records); @ is the renamed question
    ("old.test. new.test.", "www.old.test.", "www.new.test.", ["@ 300 IN A 192.0.2.1"], []),
    ("old.test. new.test.", "WwW.OLD.test.", "WwW.new.test.", ["@ 300 IN A 192.0.2.1"], []),
    ("old.test. new.test.", "a.b.old.test.", "a.b.new.test.",
     ["@ 300 IN CNAME web.new.test.", "web.new.test. 300 IN CNAME b.new.test.",
      "b.new.test. 60 IN A 192.0.2.2", "cdn.example. 60 IN A 192.0.2.3"], []),
    ("old.test. new.test.", "x.old.test.", "x.new.test.", [], [SOA]),
    ("old.test. new.test.", "old.test.", "new.test.", ["@ 300 IN MX 10 mail.new.test."], [SOA]),
    ("old.test. a-much-longer-name.example.", "www.old.test.",
     "www.a-much-longer-name.example.", ["@ 300 IN CNAME x.www.a-much-longer-name.example.",
                                         "x.www.a-much-longer-name.example. 1 IN A 192.0.2.4"], []),
    ("a-much-longer-name.example. n.t.", "web.a-much-longer-name.example.", "web.n.t.",
     ["@ 300 IN NS ns1.n.t.", "@ 300 IN NS ns2.elsewhere.", "@ 9 IN PTR web.n.t."], []),
]  # fmt: skip


def renamed_reply(renamed: str, answer: list[str], authority: list[str], edns: bool) -> bytes:
    """The reply the rest of the chain gives to the renamed question, as bytes."""
    reply = NextHandler(answer=answer, authority=authority, as_bytes=True).handle(
        make_request(renamed, edns=edns)
    )
    assert isinstance(reply, bytes)
    return reply


@pytest.mark.parametrize("edns", [False, True])
@pytest.mark.parametrize(("rule", "asked", "renamed", "answer", "authority"), REPLIES)
def test_the_bytes_renamed_read_as_the_parsed_message_renamed(
    rule: str, asked: str, renamed: str, answer: list[str], authority: list[str], edns: bool
) -> None:
    source, target = rule.split()
    rename = SuffixRename(name(source).canonicalize(), name(target).canonicalize())
    reply = renamed_reply(renamed, answer, authority, edns)
    fast = rename_wire(reply, rename, wire(asked), wire(renamed))
    assert fast is not None, "the usual shape is renamed on its bytes"
    parsed = rename_message(dns.message.from_wire(reply), rename, name(asked), name(renamed))
    from_bytes = dns.message.from_wire(fast)
    assert from_bytes == parsed  # names compare without regard to case
    assert from_bytes.question[0].name.to_text() == asked  # the client's case, exactly
    assert len(fast) == len(reply) + len(wire(asked)) - len(wire(renamed))
    assert not any(
        rrset.name.is_subdomain(name(target))
        for rrset in (*from_bytes.answer, *from_bytes.authority)
    )


def test_a_pointer_into_the_new_suffix_is_left_to_the_parsed_message() -> None:
    """``ns.example.`` points at ``example.`` inside ``www.new.example.``: no byte renaming."""
    rename = SuffixRename(name("old.test."), name("new.example."))
    reply = renamed_reply("www.new.example.", ["@ 60 IN NS ns.example."], [], False)
    assert rename_wire(reply, rename, wire("www.old.test."), wire("www.new.example.")) is None
    parsed = rename_message(dns.message.from_wire(reply), rename, name("www.old.test."),
                          name("www.new.example."))  # fmt: skip
    assert texts(parsed) == ["www.old.test. NS ns.example."]


def test_a_name_under_the_new_suffix_spelled_out_is_left_to_the_parsed_message() -> None:
    rename = SuffixRename(name("old.test."), name("new.test."))
    reply = renamed_reply("www.new.test.", [], [], False)
    spelled = wire("web.new.test.") + bytes.fromhex("0001 0001 0000003c 0004 c0000204")
    raw = bytearray(reply + spelled)
    raw[7] = 1  # one answer
    assert rename_wire(bytes(raw), rename, wire("www.old.test."), wire("www.new.test.")) is None
    parsed = rename_message(dns.message.from_wire(bytes(raw)), rename, name("www.old.test."),
                          name("www.new.test."))  # fmt: skip
    assert texts(parsed) == ["web.old.test. A 192.0.2.4"]


@pytest.mark.parametrize(
    "damage",
    [
        lambda r: r[:20],  # cut short
        lambda r: r + b"\x00",  # trailing byte
        lambda r: r[:5] + b"\x02" + r[6:],  # two questions
        lambda r: r[:12] + b"\x03xyz" + r[16:],  # another question
    ],
)
def test_bytes_that_are_not_the_usual_shape_are_not_renamed(
    damage: Callable[[bytes], bytes],
) -> None:
    rename = SuffixRename(name("old.test."), name("new.test."))
    reply = renamed_reply("www.new.test.", ["@ 300 IN A 192.0.2.1"], [], True)
    assert rename_wire(reply, rename, wire("www.old.test."), wire("www.new.test.")) is not None
    assert rename_wire(damage(reply), rename, wire("www.old.test."), wire("www.new.test.")) is None


def test_bytes_for_another_pair_of_names_are_not_renamed() -> None:
    rename = SuffixRename(name("old.test."), name("new.test."))
    reply = renamed_reply("www.new.test.", ["@ 300 IN A 192.0.2.1"], [], False)
    assert rename_wire(reply, rename, wire("web.old.test."), wire("www.new.test.")) is None
    assert rename_wire(reply, rename, wire("www.other.test."), wire("www.new.test.")) is None


RENAME = SuffixRename(name("old.test."), name("new.test."))


@pytest.mark.parametrize("as_bytes", [False, True])
async def test_ask_renamed_asks_the_new_name_and_answers_the_old_now_or_after_a_wait(
    as_bytes: bool,
) -> None:
    for wait in (False, True):
        rest = NextHandler(answer=["@ 300 IN A 192.0.2.1"], as_bytes=as_bytes, wait=wait)
        request = make_request("WwW.Old.test.")
        result = ask_renamed(rest, request, RENAME)
        assert (type(result) is Pending) is wait
        reply = await settle(result)
        msg = reply if isinstance(reply, dns.message.Message) else dns.message.from_wire(reply)
        assert [r.name for r in rest.requests] == ["www.new.test."]
        assert msg.question[0].name.to_text() == "WwW.Old.test."
        assert texts(msg) == ["WwW.Old.test. A 192.0.2.1"]


def test_ask_renamed_credits_whoever_answered_the_renamed_copy() -> None:
    class Credited(NextHandler):
        def handle(self, request: Request) -> Result:
            request.answered_by = "cache"
            return super().handle(request)

    request = make_request("www.old.test.")
    ask_renamed(Credited(answer=["@ 300 IN A 192.0.2.1"], as_bytes=True), request, RENAME)
    assert request.answered_by == "cache"


def test_ask_renamed_answers_yxdomain_for_a_name_too_long_once_renamed() -> None:
    rename = SuffixRename(name("old.test."), name(".".join(["x" * 60] * 4) + "."))
    rest = NextHandler()
    reply = ask_renamed(rest, make_request("y" * 40 + ".old.test."), rename)
    assert isinstance(reply, bytes)
    assert dns.message.from_wire(reply).rcode() == dns.rcode.YXDOMAIN
    assert rest.requests == []
