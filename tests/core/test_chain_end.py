"""What a server block answers when no plugin does, as CoreDNS's server.

A block with no plugin chain at all (empty, or only directives that are no
handler: bind, health, ready, reload) is REFUSED, as CoreDNS answers a zone
whose chain is nil. A chain that runs off its end (every plugin passed the
query on) is SERVFAIL, as ``plugin.NextOrFailure``; *prometheus*, a handler
in CoreDNS, makes a chain.
"""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest

from pycorefile import Pending, Request, load_config
from pycorefile._contract import settle
from pycorefile.testing import make_query, query, serve

CHAINS = [
    # (server block body, rcode of a query for example.org A)
    ("", dns.rcode.REFUSED),
    ("bind 127.0.0.1", dns.rcode.REFUSED),
    ("bind 127.0.0.1\n    reload 10s", dns.rcode.REFUSED),
    ("ready 127.0.0.1:0", dns.rcode.REFUSED),
    ("health 127.0.0.1:0", dns.rcode.REFUSED),
    ("prometheus 127.0.0.1:0", dns.rcode.SERVFAIL),
    ("log", dns.rcode.SERVFAIL),
    ("errors", dns.rcode.SERVFAIL),
    ("cache", dns.rcode.SERVFAIL),
    ("acl {\n        allow\n    }", dns.rcode.SERVFAIL),
    ("whoami", dns.rcode.NOERROR),
]


@pytest.mark.parametrize(("body", "rcode"), CHAINS)
async def test_block_without_a_chain_is_refused_a_chain_off_its_end_servfail(
    body: str, rcode: int
) -> None:
    config = load_config(f".:53 {{\n    {body}\n}}\n")
    (block,) = config.blocks
    for edns in (False, True):
        request = Request.from_message(make_query("example.org", "A", edns=edns))
        now = block.chain.handle(request)
        assert not isinstance(now, Pending), body  # answered without waiting
        waited = await settle(block.chain.handle(request))
        for reply in (now, waited):
            assert reply is not None
            wire = reply if isinstance(reply, bytes) else reply.to_wire()
            msg = dns.message.from_wire(wire)
            assert msg.rcode() == rcode, (body, edns)
            assert msg.question[0].name.to_text() == "example.org."
            assert (msg.edns == 0) == edns


@pytest.mark.parametrize("proto", ["udp", "tcp"])
async def test_served_block_with_only_bind_is_refused(proto: str) -> None:
    """A zone whose block has no chain is REFUSED, never handed to the root block."""
    corefile = """\
example.org:0 {
    bind 127.0.0.1
}
.:0 {
    bind 127.0.0.1
    whoami
}
"""
    async with serve(corefile) as server:
        refused = await query(server, "www.example.org", "A", proto=proto)
        answered = await query(server, "www.example.net", "A", proto=proto)
    assert refused.rcode() == dns.rcode.REFUSED and not refused.answer
    assert answered.rcode() == dns.rcode.NOERROR and answered.additional
