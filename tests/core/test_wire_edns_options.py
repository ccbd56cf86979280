"""Extended DNS Errors in wire form: built, added to an error reply, read back (no sockets)."""

from __future__ import annotations

import dns.edns
import dns.message
import dns.rcode
import pytest

from pycorefile import Request
from pycorefile._wire import extended_error, extended_errors, with_edns_options
from pycorefile.testing import make_query


def test_an_error_reply_with_extended_errors_parses_back() -> None:
    request = Request.from_message(make_query("example.org", "A", edns=True, do=True))
    wire = with_edns_options(
        request.error(dns.rcode.REFUSED), extended_error(15) + extended_error(17)
    )
    reply = dns.message.from_wire(wire)
    assert reply.rcode() == dns.rcode.REFUSED
    assert [int(o.code) for o in reply.options if isinstance(o, dns.edns.EDEOption)] == [15, 17]
    assert extended_errors(wire) == extended_error(15) + extended_error(17)


def test_only_extended_errors_are_read_other_options_are_not() -> None:
    msg = dns.message.make_response(make_query("example.org", "A", edns=True))
    msg.use_edns(
        0, options=[dns.edns.NSIDOption(b"ns1"), dns.edns.EDEOption(dns.edns.EDECode.BLOCKED)]
    )
    assert extended_errors(msg.to_wire()) == extended_error(15)
    assert extended_errors(make_query("example.org", "A").to_wire()) == b""
    assert extended_errors(b"\x00\x01") == b""  # unreadable: none


def test_options_need_the_reply_to_end_with_an_empty_opt_record() -> None:
    request = Request.from_message(make_query("example.org", "A"))  # no EDNS: no OPT
    with pytest.raises(ValueError, match="empty OPT record"):
        with_edns_options(request.error(dns.rcode.REFUSED), extended_error(15))
    assert with_edns_options(b"unchanged", b"") == b"unchanged"
