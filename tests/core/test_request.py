"""Request: copies made without reading the packet again."""

from __future__ import annotations

import dns.flags
import dns.message
import pytest

from pycorefile import Request
from pycorefile._request import _NO_ROUTE
from pycorefile._wire import FLAG_AD, FLAG_CD, FLAG_RD
from pycorefile.testing import make_query

QUERIES = [
    make_query("Www.Example.ORG", "A", rd=False),
    make_query("example.org", "AAAA", edns=True, payload=4096, rd=False),
    make_query("example.org", "MX", do=True, cd=True, rd=False),
]

_FIELDS = (
    "id", "flags", "opcode", "qdcount", "name_end", "qtype", "qclass", "edns", "edns_payload",
    "edns_version", "do", "simple", "key", "wire", "name",
)  # fmt: skip


@pytest.mark.parametrize("query", QUERIES, ids=["plain", "edns", "do-cd"])
@pytest.mark.parametrize("bits", [FLAG_AD, FLAG_RD, FLAG_AD | FLAG_RD], ids=["ad", "rd", "both"])
def test_flagged_copy_is_the_request_the_changed_packet_reads_as(
    query: dns.message.Message, bits: int
) -> None:
    request = Request(query.to_wire(), ("127.0.0.2", 5300), "tcp", ("127.0.0.1", 53))
    request.max_size = 700
    request.answered_by = "someone"
    before = {name: getattr(request, name) for name in _FIELDS}
    copy = request.flagged(bits)
    read = Request(copy.wire, ("127.0.0.2", 5300), "tcp", ("127.0.0.1", 53))
    assert {name: getattr(copy, name) for name in _FIELDS} == {
        name: getattr(read, name) for name in _FIELDS
    }
    assert copy.flags == request.flags | bits
    assert copy.wire[:2] == request.wire[:2] and copy.wire[4:] == request.wire[4:]
    assert copy.message.flags & bits == bits
    assert (copy.client, copy.proto, copy.local) == (request.client, request.proto, request.local)
    assert copy.max_size == 700 and copy.route is request.route is _NO_ROUTE
    assert copy.answered_by == "" and copy.pending is None
    assert {name: getattr(request, name) for name in _FIELDS} == before  # left as it was


def test_flagged_refuses_flags_that_change_the_key() -> None:
    request = Request(make_query("example.org", "A").to_wire())
    with pytest.raises(AssertionError):
        request.flagged(FLAG_CD)
