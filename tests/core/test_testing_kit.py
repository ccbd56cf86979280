"""The plugin author's test kit (``pycorefile.testing``): without sockets, and served.

``NextHandler``, ``chain``, ``setup_plugin``, ``run`` and ``run_async`` drive a
plugin's ``handle`` as the server does; ``serve(..., plugins=...)`` serves a
plugin class that is not installed; ``scrape`` reads the served metrics.
"""

from __future__ import annotations

import gc
import math
import warnings
from collections.abc import Sequence

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest
import trio

from pycorefile import (
    DROP,
    CorefileError,
    Directive,
    Plugin,
    PluginError,
    Reply,
    Request,
    Result,
    SetupContext,
    SetupError,
    Wrapper,
    check_args,
    load_config,
    then,
)
from pycorefile._contract import plugin_of
from pycorefile._registry import RegistryError
from pycorefile.testing import (
    Dropped,
    NextHandler,
    WouldWait,
    chain,
    make_request,
    query,
    run,
    run_async,
    scrape,
    serve,
    setup_plugin,
)


class Stamp(Plugin):
    """``stamp TEXT``: answers TXT with TEXT, drops ``drop.*``, passes every other query on."""

    before = "cache"

    def __init__(self, text: str) -> None:
        self.text = text

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> Stamp:
        check_args(directives[0], 1, 1)
        if directives[0].args[0] == "bad":
            raise SetupError("bad is not a stamp", directives[0], 0)
        return cls(directives[0].args[0])

    def handle(self, request: Request) -> Result:
        if request.name.startswith("drop."):
            return DROP
        if request.qtype != dns.rdatatype.TXT:
            return self.next.handle(request)
        reply = request.reply(authoritative=True)
        reply.answer.append(dns.rrset.from_text(request.qname, 60, "IN", "TXT", self.text))
        return reply


class Upper(Wrapper):
    """Uppercases the TXT strings that come back (on_reply only)."""

    name = "upper"

    def on_reply(self, request: Request, reply: Reply) -> Reply:
        msg = reply if isinstance(reply, dns.message.Message) else dns.message.from_wire(reply)
        msg.answer = [shout(rrset) for rrset in msg.answer]
        return msg


def shout(rrset: dns.rrset.RRset) -> dns.rrset.RRset:
    rdatas = [rd.replace(strings=[t.upper() for t in rd.strings]) for rd in rrset]
    return dns.rrset.from_rdata_list(rrset.name, rrset.ttl, rdatas)


STAMP = {"stamp": Stamp}


# -- NextHandler ------------------------------------------------------------------------


def test_next_handler_answers_its_records_and_records_the_requests() -> None:
    rest = NextHandler(
        answer=["@ 300 IN A 192.0.2.1", "@ 300 IN A 192.0.2.2", "other.test. 60 IN A 192.0.2.3"],
        authoritative=True,
    )
    first = make_request("WWW.example.org")
    reply = run(rest, first)
    run(rest, "two.example.org", "AAAA")
    assert [r.name for r in rest.requests] == ["www.example.org.", "two.example.org."]
    assert rest.requests[0] is first
    assert reply.rcode() == dns.rcode.NOERROR and reply.flags & dns.flags.AA
    www = reply.find_rrset(
        reply.answer, dns.name.from_text("www.example.org."), dns.rdataclass.IN, dns.rdatatype.A
    )
    assert www.name.to_text() == "WWW.example.org."  # ``@`` is the question as asked
    assert sorted(str(rd) for rd in www) == ["192.0.2.1", "192.0.2.2"]
    assert www.ttl == 300
    assert len(reply.answer) == 2


def test_next_handler_answers_an_rcode_with_authority_records() -> None:
    soa = "example.org. 60 IN SOA ns.example.org. admin.example.org. 1 3600 600 86400 60"
    rest = NextHandler(dns.rcode.NXDOMAIN, authority=[soa])
    reply = run(rest, "nothing.example.org")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert not reply.answer
    assert reply.authority[0].rdtype == dns.rdatatype.SOA


def test_next_handler_gives_bytes_or_a_message() -> None:
    assert isinstance(NextHandler(as_bytes=True).handle(make_request("a.test")), bytes)
    assert isinstance(NextHandler().handle(make_request("a.test")), dns.message.Message)


def test_next_handler_reply_function_replaces_the_fixed_reply() -> None:
    rest = NextHandler(reply=lambda request: request.error(dns.rcode.REFUSED))
    assert run(rest, "a.test").rcode() == dns.rcode.REFUSED


def test_next_handler_refuses_a_record_it_cannot_read() -> None:
    with pytest.raises(ValueError, match="not a record line"):
        NextHandler(answer=["192.0.2.1"])


def test_next_handler_raises_a_fresh_copy_of_its_error_each_time() -> None:
    rest = NextHandler(error=PluginError("no upstream", dns.rcode.REFUSED))
    handler = chain(setup_plugin(Stamp, "stamp hi"), rest)
    raised = []
    for _ in range(2):
        with pytest.raises(PluginError) as caught:
            run(handler, "a.test")
        raised.append(caught.value)
    assert raised[0] is not raised[1] and raised[0] is not rest.error
    assert [e.rcode for e in raised] == [dns.rcode.REFUSED] * 2
    assert [plugin_of(e) for e in raised] == ["stamp", "stamp"]  # named where it came out
    assert [str(e) for e in raised] == ["no upstream"] * 2


def test_run_refuses_a_chain_that_waits_and_discards_the_wait() -> None:
    rest = NextHandler(wait=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(WouldWait, match="run_async"):
            run(rest, "a.test")
        gc.collect()
    assert not [w for w in caught if "never awaited" in str(w.message)]
    assert len(rest.requests) == 1


async def test_run_async_settles_a_wait() -> None:
    rest = NextHandler(answer=["@ 60 IN A 192.0.2.1"], wait=True)
    reply = await run_async(chain(setup_plugin(Stamp, "stamp hi"), rest), "a.test")
    assert str(reply.answer[0][0]) == "192.0.2.1"
    slow = NextHandler(answer=["@ 60 IN A 192.0.2.9"], wait=0.01)
    assert str((await run_async(slow, "a.test")).answer[0][0]) == "192.0.2.9"


async def test_run_async_answers_at_once_when_nothing_waits() -> None:
    reply = await run_async(chain(setup_plugin(Stamp, "stamp hi"), NextHandler()), "a.test", "TXT")
    assert reply.answer[0][0].strings == (b"hi",)


async def test_run_async_deadline_cancels_the_wait() -> None:
    rest = NextHandler(wait=math.inf)
    with pytest.raises(trio.TooSlowError):
        await run_async(rest, "a.test", timeout=0.01)
    assert rest.cancelled == 1


async def test_an_error_after_a_wait_is_raised_by_run_async() -> None:
    rest = NextHandler(wait=True, error=PluginError("timed out"))
    with pytest.raises(PluginError, match="timed out"):
        await run_async(rest, "a.test")
    assert rest.cancelled == 0


# -- chain, setup_plugin, run -----------------------------------------------------------


def test_chain_credits_the_plugin_that_answered() -> None:
    handler = chain(setup_plugin(Stamp, "stamp hi"), NextHandler())
    answered = make_request("a.test", "TXT")
    passed = make_request("a.test", "A")
    assert run(handler, answered).answer[0][0].strings == (b"hi",)
    run(handler, passed)
    assert answered.answered_by == "stamp"
    assert passed.answered_by == "stamp"  # the next handler is no plugin: the Step credits


def test_chain_of_several_plugins_and_a_wrapper() -> None:
    handler = chain([Upper(), setup_plugin(Stamp, "stamp hi")], NextHandler())
    req = make_request("a.test", "TXT")
    assert run(handler, req).answer[0][0].strings == (b"HI",)
    assert req.answered_by == "stamp"  # a wrapper that looks at the reply is not credited


def test_chain_without_next_ends_in_servfail() -> None:
    assert run(chain(setup_plugin(Stamp, "stamp hi")), "a.test").rcode() == dns.rcode.SERVFAIL


def test_chain_wants_named_plugins() -> None:
    nameless = type("Nameless", (Stamp,), {"name": ""})
    with pytest.raises(ValueError, match="no directive name"):
        chain(nameless("hi"), NextHandler())


def test_run_reports_a_dropped_query() -> None:
    with pytest.raises(Dropped):
        run(chain(setup_plugin(Stamp, "stamp hi"), NextHandler()), "drop.a.test")


def test_run_sizes_the_reply_for_the_client() -> None:
    big = [f"@ 60 IN TXT {'x' * 200}{i}" for i in range(5)]
    assert run(NextHandler(answer=big), "a.test", "TXT").flags & dns.flags.TC
    reply = run(NextHandler(answer=big), "a.test", "TXT", proto="tcp")
    assert not reply.flags & dns.flags.TC and len(reply.answer[0]) == 5


def test_setup_plugin_reports_mistakes_at_their_position() -> None:
    with pytest.raises(CorefileError) as caught:
        setup_plugin(Stamp, "stamp bad")
    assert str(caught.value).startswith("Corefile:2:7 - plugin/stamp: bad is not a stamp")
    with pytest.raises(CorefileError, match="Wrong argument count"):
        setup_plugin(Stamp, "stamp")
    with pytest.raises(ValueError, match="directive line"):
        setup_plugin(Stamp, "  \n")


def test_setup_plugin_registers_the_class_under_the_first_word() -> None:
    greet: type[Stamp] = type("Greet", (Stamp,), {})
    plugin = setup_plugin(greet, "greet hello\nwhoami")
    assert plugin.text == "hello" and plugin.name == "greet"


# -- Registering plugin classes that are not installed ------------------------------------


def test_a_class_not_installed_is_placed_by_its_before_attribute() -> None:
    config = load_config(".:53 {\n cache\n stamp hi\n whoami\n acl\n}\n", plugins=STAMP)
    assert [p.name for p in config.blocks[0].plugins] == ["acl", "stamp", "cache", "whoami"]


def test_a_class_not_installed_replaces_an_installed_name() -> None:
    config = load_config(".:53 {\n whoami hi\n}\n", plugins={"whoami": Stamp})
    assert isinstance(config.find("whoami")[0], Stamp)


def test_only_plugin_classes_can_be_registered() -> None:
    with pytest.raises(RegistryError, match="not a Plugin subclass"):
        load_config(".:53 {\n}\n", plugins={"oops": dict})  # type: ignore[dict-item]


def test_without_registration_the_directive_is_unknown() -> None:
    with pytest.raises(CorefileError, match="Unknown directive 'stamp'"):
        load_config(".:53 {\n stamp hi\n}\n")


async def test_serve_a_plugin_that_is_not_installed_and_scrape_its_metrics() -> None:
    corefile = ".:0 {\n bind 127.0.0.1\n prometheus 127.0.0.1:0\n stamp hello\n whoami\n}\n"
    async with serve(corefile, plugins=STAMP) as server:
        txt = await query(server, "a.test", "TXT")
        other = await query(server, "a.test", "A", proto="tcp")
        metrics = await scrape(server)
    assert txt.answer[0][0].strings == (b"hello",)
    assert other.rcode() == dns.rcode.NOERROR and other.additional  # whoami answered
    responses = "coredns_dns_responses_total"
    assert metrics.value(responses, plugin="stamp", rcode="NOERROR") == 1
    assert metrics.value(responses, plugin="whoami") == 1
    assert metrics.value(responses) == 2
    assert metrics.value(responses, plugin="nobody") == 0


def test_then_in_a_test_plugin_sees_bytes_and_messages() -> None:
    """A plugin that changes what comes back is tested with both kinds of reply."""
    seen: list[Reply] = []

    class Looks(Plugin):
        name = "looks"

        def handle(self, request: Request) -> Result:
            return then(self.next.handle(request), self.look)

        def look(self, reply: Reply) -> Reply:
            seen.append(reply)
            return reply

    for as_bytes in (False, True):
        run(chain(Looks(), NextHandler(as_bytes=as_bytes)), "a.test")
    assert [type(r) for r in seen][1] is bytes
    assert isinstance(seen[0], dns.message.Message)


# -- Request.derive: another question, named as text, a dnspython name or wire bytes -----


@pytest.mark.parametrize(
    "qname",
    ["Web.Example.ORG.", dns.name.from_text("Web.Example.ORG."), b"\x03Web\x07Example\x03ORG\x00"],
    ids=["text", "name", "wire"],
)
def test_derive_asks_another_name_and_keeps_the_rest(qname: str | dns.name.Name | bytes) -> None:
    original = make_request("www.example.org", "AAAA", edns=True, do=True, client=("192.0.2.9", 5))
    derived = original.derive(qname)
    assert derived.qname_wire == b"\x03Web\x07Example\x03ORG\x00"  # the letter case as given
    assert derived.name == "web.example.org."
    assert (derived.id, derived.qtype, derived.edns, derived.do, derived.client) == (
        original.id, original.qtype, True, True, ("192.0.2.9", 5),
    )  # fmt: skip
    assert derived.derive(qname, dns.rdatatype.TXT).qtype == dns.rdatatype.TXT


@pytest.mark.parametrize(
    "bad", [b"\x03www", b"\x03www\x00\x00", b"\x40" + b"x" * 64 + b"\x00", b"\x3f" + b"x" * 63 * 5]
)
def test_derive_refuses_bytes_that_are_not_one_wire_name(bad: bytes) -> None:
    with pytest.raises(ValueError):
        make_request("www.example.org").derive(bad)
