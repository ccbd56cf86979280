"""plugin.lookup: a plugin asks the server a new question, from the top, loops bounded."""

from __future__ import annotations

from collections.abc import Sequence

import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset

from pycorefile import (
    Directive,
    Plugin,
    PluginError,
    Reply,
    Request,
    Result,
    SetupContext,
    lookup,
    reply_message,
    then,
)
from pycorefile.plugin import MAX_LOOKUP_DEPTH
from pycorefile.testing import NextHandler, chain, query, run, run_async, serve


class AskAgain(Plugin):
    """Answers ``ask.test`` with what the server answers for ``target.test`` (and the depth)."""

    name = "askagain"

    def __init__(self, target: str = "target.test.") -> None:
        self.target = target
        self.depths: list[int] = []

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> AskAgain:
        return cls(directives[0].args[0] if directives[0].args else "target.test.")

    def handle(self, request: Request) -> Result:
        self.depths.append(request.depth)
        if request.name != "ask.test.":
            return self.next.handle(request)
        return then(lookup(request, self.target), lambda reply: self._copy(request, reply))

    @staticmethod
    def _copy(request: Request, reply: Reply) -> Reply:
        looked_up = reply_message(reply)
        msg = request.reply(looked_up.rcode())
        msg.answer = looked_up.answer
        return msg


def target_answer(request: Request) -> Reply:
    msg = request.reply()
    msg.answer.append(dns.rrset.from_text(request.qname, 60, "IN", "A", "192.0.2.7"))
    return msg


def test_lookup_runs_the_chain_from_the_top_with_the_depth_carried() -> None:
    plugin = AskAgain()
    reply = run(chain(plugin, NextHandler(reply=target_answer)), "ask.test", "A")
    assert [rr.to_text() for rr in reply.answer] == ["target.test. 60 IN A 192.0.2.7"]
    assert plugin.depths == [0, 1]  # the client's query, then the lookup through the same chain


def test_a_lookup_loop_ends_at_the_depth_bound() -> None:
    plugin = AskAgain(target="ask.test.")  # asks itself
    reply = run(chain(plugin, NextHandler()), "ask.test", "A")
    assert reply.rcode() == dns.rcode.SERVFAIL
    assert plugin.depths == list(range(MAX_LOOKUP_DEPTH + 1))


async def test_a_failure_of_the_looked_up_chain_is_its_error_reply() -> None:
    plugin = AskAgain()
    failing = NextHandler(wait=True, error=PluginError("upstream gone", dns.rcode.REFUSED))
    reply = await run_async(chain(plugin, failing), "ask.test", "A")
    assert reply.rcode() == dns.rcode.REFUSED


def test_without_a_server_a_lookup_is_answered_servfail() -> None:
    request = Request.from_message(dns.message.make_query("ask.test.", dns.rdatatype.A))
    result = lookup(request, "target.test.")
    assert isinstance(result, bytes)
    assert dns.message.from_wire(result).rcode() == dns.rcode.SERVFAIL


async def test_served_lookup_is_routed_to_the_block_of_the_longest_zone() -> None:
    corefile = """ask.test:0 {
    bind 127.0.0.1
    askagain www.target.test.
}
target.test:0 {
    bind 127.0.0.1
    template IN A {
        answer "{{ .Name }} 60 IN A 192.0.2.8"
    }
}
"""
    async with serve(corefile, plugins={"askagain": AskAgain}) as server:
        reply = await query(server, "ask.test", "A")
    assert [rr.to_text() for rr in reply.answer] == ["www.target.test. 60 IN A 192.0.2.8"]


async def test_served_lookup_passes_through_view_filters() -> None:
    """A view's filter sees the looked-up question: the block it refuses is passed over."""
    corefile = """ask.test:0 {
    bind 127.0.0.1
    askagain www.target.test.
}
target.test:0 {
    bind 127.0.0.1
    view elsewhere {
        expr client_ip() == '127.0.0.9'
    }
    template IN A {
        answer "{{ .Name }} 60 IN A 192.0.2.9"
    }
}
target.test:0 {
    bind 127.0.0.1
    template IN A {
        answer "{{ .Name }} 60 IN A 192.0.2.8"
    }
}
"""
    async with serve(corefile, plugins={"askagain": AskAgain}) as server:
        reply = await query(server, "ask.test", "A")
    assert [rr.to_text() for rr in reply.answer] == ["www.target.test. 60 IN A 192.0.2.8"]
