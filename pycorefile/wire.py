"""DNS messages as bytes: the public wire helpers a plugin may use.

These are the sans-IO functions the server's own fast path runs on: reading a
query's header, question and OPT record without dnspython, names in wire form,
EDNS options, reply sizing, and ``PreparedReply`` -- an answer stored as wire
bytes and sent again with only the ID, flags, question casing and TTLs patched
(what cache and meshhosts answer from). Everything here is a plain function
over ``bytes``; nothing does I/O.
"""

from __future__ import annotations

from ._wire import (
    EDNS_EDE,
    FLAG_AA,
    FLAG_AD,
    FLAG_CD,
    FLAG_QR,
    FLAG_RA,
    FLAG_RD,
    FLAG_TC,
    HEADER_LEN,
    MAX_TCP,
    OUR_PAYLOAD,
    TYPE_OPT,
    PreparedReply,
    QueryInfo,
    WireError,
    error_reply,
    extended_error,
    extended_errors,
    fit_reply,
    max_reply_size,
    message_to_wire,
    name_to_text,
    read_query,
    replace_ttls,
    reply_rcode,
    skip_name,
    strip_opt,
    ttl_offsets,
    with_edns_options,
)

__all__ = [
    "EDNS_EDE",
    "FLAG_AA",
    "FLAG_AD",
    "FLAG_CD",
    "FLAG_QR",
    "FLAG_RA",
    "FLAG_RD",
    "FLAG_TC",
    "HEADER_LEN",
    "MAX_TCP",
    "OUR_PAYLOAD",
    "TYPE_OPT",
    "PreparedReply",
    "QueryInfo",
    "WireError",
    "error_reply",
    "extended_error",
    "extended_errors",
    "fit_reply",
    "max_reply_size",
    "message_to_wire",
    "name_to_text",
    "read_query",
    "replace_ttls",
    "reply_rcode",
    "skip_name",
    "strip_opt",
    "ttl_offsets",
    "with_edns_options",
]
