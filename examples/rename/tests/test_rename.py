"""The rename plugin: parsed alone, driven through the test kit, and served for real.

The served tests register the plugin class with ``serve(..., plugins=...)``,
so the package need not be installed to run them.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Sequence
from importlib.metadata import EntryPoint
from pathlib import Path

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype
import pytest
import trio
from pycorefile_rename import (
    RenameConfig,
    RenamePlugin,
    parse_rename,
)

from pycorefile import (
    CorefileError,
    Directive,
    Plugin,
    PluginError,
    Request,
    Result,
    SetupContext,
    load_config,
)
from pycorefile.rename import SuffixRename
from pycorefile.testing import (
    NextHandler,
    Upstream,
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

HERE = Path(__file__).resolve().parents[1]
RENAME = {"rename": RenamePlugin}


def name(text: str) -> dns.name.Name:
    return dns.name.from_text(text)


def rename(lines: str = "rename old.test. new.test.") -> RenamePlugin:
    return setup_plugin(RenamePlugin, lines)


def texts(msg: dns.message.Message) -> list[str]:
    """Every record of the answer section as text, in order."""
    return [f"{rrset.name} {dns.rdatatype.to_text(rrset.rdtype)} {rd}" for rrset in msg.answer
            for rd in rrset]  # fmt: skip


# -- Parsing ----------------------------------------------------------------------------


def directive(*args: str, block: tuple[Directive, ...] | None = None) -> Directive:
    return Directive("rename", args, "Corefile", 2, 5, block)


def test_parse_puts_the_most_specific_rule_first() -> None:
    config = parse_rename([directive("Old.Test", "new.test."), directive("a.old.test.", "b.test.")])
    assert config == RenameConfig(
        (
            SuffixRename(name("a.old.test."), name("b.test.")),
            SuffixRename(name("old.test."), name("new.test.")),
        )
    )


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("rename old.test.", "Corefile:2:2 - plugin/rename: Wrong argument count"),
        ("rename a. b. c.", "Corefile:2:15 - plugin/rename: Wrong argument count"),
        (
            "rename old.test. " + "x" * 64 + ".test.",
            "Corefile:2:19 - plugin/rename: invalid domain",
        ),
        (
            "rename old.test. OLD.test",
            "Corefile:2:19 - plugin/rename: old.test. is renamed to itself",
        ),
        ("rename a. b. {\n  x\n }", "Corefile:2:2 - plugin/rename: rename takes no block"),
        ("rename a. b.\n rename A c.", "Corefile:3:9 - plugin/rename: A is already renamed to b."),
    ],
)
def test_setup_errors_point_at_the_argument(line: str, message: str) -> None:
    with pytest.raises(CorefileError) as caught:
        load_config(f".:53 {{\n {line}\n}}\n", plugins=RENAME)
    assert str(caught.value).startswith(message)


def test_the_entry_point_names_the_plugin_class() -> None:
    project = tomllib.loads((HERE / "pyproject.toml").read_text())
    (group,) = project["project"]["entry-points"].values()
    entry = EntryPoint("rename", group["rename"], "pycorefile.plugins")
    assert entry.load() is RenamePlugin


def test_it_runs_just_before_the_cache() -> None:
    body = "bind 127.0.0.1\n forward . 127.0.0.2\n cache\n rename a. b.\n acl"
    config = load_config(f".:53 {{\n {body}\n}}\n", plugins=RENAME)
    names = [p.name for p in config.blocks[0].plugins]
    assert names == ["bind", "acl", "rename", "cache", "forward"]


# -- Through the test kit: no sockets ---------------------------------------------------


def test_the_plugin_renames_bytes_as_bytes_and_falls_back_to_the_message() -> None:
    usual = NextHandler(answer=["@ 300 IN A 192.0.2.1"], as_bytes=True)
    assert isinstance(chain(rename(), usual).handle(make_request("www.old.test.")), bytes)
    odd = NextHandler(answer=["@ 60 IN NS ns.example."], as_bytes=True)
    plugin = rename("rename old.test. new.example.")
    result = chain(plugin, odd).handle(make_request("www.old.test."))
    assert isinstance(result, dns.message.Message)
    assert texts(result) == ["www.old.test. NS ns.example."]


@pytest.mark.parametrize("as_bytes", [False, True])
def test_the_rest_of_the_chain_sees_the_new_name_the_client_the_old(as_bytes: bool) -> None:
    rest = NextHandler(answer=["@ 300 IN A 192.0.2.1"], as_bytes=as_bytes)
    reply = run(chain(rename(), rest), "WwW.OLD.test.", edns=True)
    assert [r.name for r in rest.requests] == ["www.new.test."]
    assert rest.requests[0].qname.to_text() == "WwW.new.test."  # the client's case goes along
    assert reply.question[0].name.to_text() == "WwW.OLD.test."
    assert texts(reply) == ["WwW.OLD.test. A 192.0.2.1"]
    assert reply.edns == 0  # the client's EDNS came along and back


def test_a_cname_chain_under_the_new_name_comes_back_under_the_old() -> None:
    rest = NextHandler(
        answer=["@ 300 IN CNAME web.new.test.", "web.new.test. 300 IN A 192.0.2.7",
                "cdn.example. 300 IN A 192.0.2.8"],
    )  # fmt: skip
    reply = run(chain(rename(), rest), "www.old.test.")
    assert texts(reply) == [
        "www.old.test. CNAME web.old.test.",
        "web.old.test. A 192.0.2.7",
        "cdn.example. A 192.0.2.8",  # not under the new name: as it was
    ]


def test_a_negative_answer_comes_back_with_its_rcode() -> None:
    soa = "new.test. 60 IN SOA ns.new.test. admin.new.test. 1 3600 600 86400 60"
    reply = run(chain(rename(), NextHandler(dns.rcode.NXDOMAIN, authority=[soa])), "x.old.test.")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.authority[0].name == name("old.test.")


def test_names_it_does_not_rename_pass_on_untouched() -> None:
    """The same Request object reaches the next plugin, and its reply comes back as is."""
    rest = NextHandler(as_bytes=True)
    request = make_request("www.other.test.")
    result = chain(rename(), rest).handle(request)
    assert rest.requests == [request]
    assert result == rest.handle(request)  # the bytes the next plugin gave, unchanged


def test_the_most_specific_rule_wins() -> None:
    rest = NextHandler()
    plugin = rename("rename old.test. new.test.\nrename deep.old.test. elsewhere.test.")
    run(chain(plugin, rest), "a.deep.old.test.")
    run(chain(plugin, rest), "a.old.test.")
    assert [r.name for r in rest.requests] == ["a.elsewhere.test.", "a.new.test."]


def test_a_renamed_name_too_long_is_yxdomain() -> None:
    long_target = ".".join(["x" * 60] * 4) + "."  # 244 bytes: little room below it
    rest = NextHandler()
    request = make_request("y" * 40 + ".old.test.")
    reply = run(chain(rename(f"rename old.test. {long_target}"), rest), request)
    assert reply.rcode() == dns.rcode.YXDOMAIN
    assert rest.requests == []
    assert request.answered_by == "rename"


class Answer(Plugin):
    """Stands for a plugin after rename that answers (a cache hit, a table)."""

    name = "answer"

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> Answer:
        return cls()

    def handle(self, request: Request) -> Result:
        reply = request.reply()
        reply.flags |= dns.flags.AA
        return reply


def test_the_plugin_that_answered_the_renamed_question_is_credited() -> None:
    request = make_request("www.old.test.")
    reply = run(chain([rename(), Answer()], NextHandler()), request)
    assert reply.flags & dns.flags.AA
    assert request.answered_by == "answer"


async def test_a_wait_is_renamed_back_once_it_is_over_and_credited() -> None:
    rest = NextHandler(answer=["@ 300 IN A 192.0.2.1"], wait=True)
    handler = chain(rename(), rest)
    with pytest.raises(WouldWait):
        run(handler, "www.old.test.")
    request = make_request("www.old.test.")
    reply = await run_async(handler, request)
    assert texts(reply) == ["www.old.test. A 192.0.2.1"]
    assert request.answered_by == "rename"  # the kit's next handler is no plugin


async def test_a_failure_of_the_rest_reaches_the_server_unchanged() -> None:
    for wait in (False, True):
        rest = NextHandler(error=PluginError("no upstream", dns.rcode.REFUSED), wait=wait)
        with pytest.raises(PluginError) as caught:
            await run_async(chain(rename(), rest), "www.old.test.")
        assert caught.value.rcode == dns.rcode.REFUSED


async def test_a_deadline_while_waiting_cancels_the_wait() -> None:
    rest = NextHandler(wait=math.inf)
    with pytest.raises(trio.TooSlowError):
        await run_async(chain(rename(), rest), "www.old.test.", timeout=0.05)
    assert rest.cancelled == 1


# -- Served for real: the plugin registered without being installed ----------------------

RECORDS = {
    ("www.new.test.", "A"): ["192.0.2.1"],
    ("www.other.test.", "A"): ["192.0.2.2"],
}


def corefile(upstream: str) -> str:
    return f"""\
.:0 {{
    bind 127.0.0.1
    prometheus 127.0.0.1:0
    rename old.test. new.test.
    cache
    forward . {upstream}
}}
"""


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_served_a_renamed_cache_hit_is_counted_under_cache(proto: str) -> None:
    upstream = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with upstream.running(), serve(corefile(upstream.address), plugins=RENAME) as server:
        first = await query(server, "WwW.old.test", "A", proto=proto)
        second = await query(server, "www.OLD.test", "A", proto=proto)
        other = await query(server, "www.other.test", "A", proto=proto)
        metrics = await scrape(server)
    for reply, asked in ((first, "WwW.old.test."), (second, "www.OLD.test.")):
        assert reply.rcode() == dns.rcode.NOERROR
        assert reply.question[0].name.to_text() == asked
        assert [rrset.name.to_text() for rrset in reply.answer] == [asked]
        assert str(reply.answer[0][0]) == "192.0.2.1"
    assert str(other.answer[0][0]) == "192.0.2.2"
    # The upstream was asked the new name once: the second question was a cache hit.
    assert upstream.count("www.new.test.", "A") == 1
    assert upstream.count("www.other.test.", "A") == 1
    assert upstream.count("www.old.test.") == 0
    responses = "coredns_dns_responses_total"
    assert metrics.value(responses, plugin="cache", rcode="NOERROR") == 1
    assert metrics.value(responses, plugin="forward", rcode="NOERROR") == 2
    assert metrics.value(responses, plugin="rename") == 0
    assert metrics.value("coredns_cache_hits_total", type="success") == 1


async def test_served_an_unknown_renamed_name_is_nxdomain_under_the_old_name() -> None:
    upstream = Upstream(records=dict(RECORDS), host="127.0.0.2")
    async with upstream.running(), serve(corefile(upstream.address), plugins=RENAME) as server:
        reply = await query(server, "nothing.old.test", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN
    assert reply.question[0].name.to_text() == "nothing.old.test."
    assert upstream.count("nothing.new.test.") == 1


async def test_served_an_upstream_failure_is_servfail_not_a_fake_answer() -> None:
    upstream = Upstream(records=dict(RECORDS), host="127.0.0.2", mode="servfail")
    async with upstream.running(), serve(corefile(upstream.address), plugins=RENAME) as server:
        reply = await query(server, "www.old.test", "A")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert reply.question[0].name.to_text() == "www.old.test."
