"""The request a plugin sees, read lazily from the query's bytes, and who is given one.

``Request`` is one query on its way through a chain. The protocols that take a
Request are here too: ``Handler`` (what a plugin calls as ``self.next``),
``ReplyObserver`` and ``FailureObserver`` (what the server tells of every reply
and every plugin failure). The other shared types are in ``_types``.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Callable
from itertools import islice
from typing import Protocol

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from . import _wire
from ._types import Client, Pending, Reply, Result, Route
from ._wire import QueryInfo

_KEY_SUFFIX = (b"\x00\x00", b"\x00\x01", b"\x01\x00", b"\x01\x01")
"""The DO and CD bits as the last two bytes of a request key."""

_PARSED: dict[bytes, tuple[_wire.QueryFields, bytes]] = {}
_PARSED_MAX = 16384
"""At most this many remembered questions (a few MB); the older half goes when full."""
_FIELDS: dict[tuple[object, ...], _wire.QueryFields] = {}
"""One tuple for all remembered questions whose fields after the ID are equal (few shapes)."""
_FIELDS_MAX = 1024


def parse_question(wire: bytes) -> tuple[_wire.QueryFields, bytes]:
    """The query's fields and its key, remembered by everything after the ID.

    Clients repeat the same questions, so most packets differ from one seen
    before only in their ID: the memo saves reading the name label by label.
    It is bounded (the oldest half is dropped when full), so odd traffic
    cannot grow it. The remembered fields carry ID 0 (the caller reads the ID
    from the packet), so questions of one shape share them: a remembered
    question costs its bytes, a pair and a dictionary slot.
    """
    rest = wire[2:]
    hit = _PARSED.get(rest)
    if hit is None:
        after_id = _wire.parse_query(wire)[1:]
        shared = _FIELDS.get(after_id)
        if shared is None:
            if len(_FIELDS) >= _FIELDS_MAX:
                _FIELDS.clear()
            shared = _FIELDS[after_id] = (0, *after_id)
        end = shared[4]
        # The key: the lowercased question plus the bits that change the answer.
        key = (
            wire[12:end].lower()
            + wire[end : end + 4]
            + _KEY_SUFFIX[(2 if shared[10] else 0) | (1 if shared[1] & 0x10 else 0)]
        )
        if len(_PARSED) >= _PARSED_MAX:
            for old in list(islice(_PARSED, _PARSED_MAX // 2)):
                del _PARSED[old]
        hit = _PARSED[rest] = (shared, key)
    return hit


class _Unrouted:
    """Stands for the route of a query no server block took (REFUSED)."""

    zone = "."
    server = ""
    view = ""


_NO_ROUTE: Route = _Unrouted()

DROP = b""
"""A reply of no bytes: the server sends nothing (the acl plugin's ``drop``)."""


class Request(QueryInfo):
    """One DNS query on its way through a plugin chain.

    The fields the hot path needs (ID, question bytes, type, EDNS and DO) are
    read from the wire without dnspython (they are the ``QueryInfo`` fields).
    ``message``, ``qname`` and ``name`` are parsed on first use only, so a
    plugin that answers from prepared bytes never pays for them.
    """

    __slots__ = (
        "_message", "_name", "answered_by", "client", "depth", "key", "local", "max_size",
        "pending", "proto", "resolver", "route", "started", "wire",
    )  # fmt: skip

    def __init__(
        self,
        wire: bytes,
        client: Client = ("127.0.0.1", 0),
        proto: str = "udp",
        local: tuple[str, int] | None = None,
        server_cap: int = _wire.OUR_PAYLOAD,
        parsed: tuple[_wire.QueryFields, bytes] | None = None,
    ) -> None:
        """Read a query; raises ``_wire.WireError`` (drop) or ``QuestionError`` (FORMERR).

        ``parsed`` is what ``parse_question(wire)`` gave when the caller has it
        already (the server's dispatcher): it is not looked up again.
        """
        fields, self.key = parse_question(wire) if parsed is None else parsed
        (
            self.id, self.flags, self.opcode, self.qdcount, self.name_end, self.qtype,
            self.qclass, self.edns, self.edns_payload, self.edns_version, self.do, self.simple,
        ) = fields  # fmt: skip
        self.id = (wire[0] << 8) | wire[1]
        self.wire = wire
        self.client = client
        self.proto = proto
        self.local = local
        self.max_size = _wire.reply_limit(proto, self.edns, self.edns_payload, server_cap)
        self._message: dns.message.Message | None = None
        self._name: str | None = None
        self.answered_by = ""
        self.route: Route = _NO_ROUTE
        self.pending: Pending | None = None
        """What the server awaits for this query when the chain had to wait."""
        self.resolver: Resolver | None = None
        """What asks the server a new question for a plugin (``plugin.lookup``); set by the
        server's dispatcher, None for a request no server routed (plugin tests)."""
        self.depth = 0
        """How many lookups deep this request is: 0 for a client's query, 1 for a question
        a plugin asked the server while answering it, ... (``plugin.lookup`` bounds it)."""
        self.started = time.perf_counter()

    def flagged(self, bits: int) -> Request:
        """A copy of this request with the header flags ``bits`` (AD, RD) set.

        Nothing is read again: the cache asks the next plugin with AD set on
        every miss (as CoreDNS's does), and parsing the changed packet would
        cost more than the rest of the miss's bookkeeping. A flag that is part
        of the key (CD) may not be set this way. The copy keeps the route and
        the reply limit; ``answered_by`` starts empty. Every slot is assigned
        here: a new slot of Request must be copied here too.
        """
        assert not bits & ~(_wire.FLAG_AD | _wire.FLAG_RD), "only AD and RD"
        new = Request.__new__(Request)
        flags = self.flags | bits
        wire = self.wire
        new.wire = wire[:2] + bytes((flags >> 8, flags & 0xFF)) + wire[4:]
        new.id = self.id
        new.flags = flags
        new.opcode = self.opcode
        new.qdcount = self.qdcount
        new.name_end = self.name_end
        new.qtype = self.qtype
        new.qclass = self.qclass
        new.edns = self.edns
        new.edns_payload = self.edns_payload
        new.edns_version = self.edns_version
        new.do = self.do
        new.simple = self.simple
        new.key = self.key
        new.client = self.client
        new.proto = self.proto
        new.local = self.local
        new.max_size = self.max_size
        new.route = self.route
        new.resolver = self.resolver
        new.depth = self.depth
        new.started = self.started
        new._message = None
        new._name = self._name
        new.answered_by = ""
        new.pending = None
        return new

    def limit_payload(self, cap: int) -> None:
        """Apply a server block's EDNS payload limit (the bufsize plugin).

        UDP replies are capped to ``cap`` instead of the server's cap, and a
        larger payload in the query is lowered to ``cap``, in the query's bytes
        too: every plugin sees the lowered one (forward sends it upstream).
        """
        self.max_size = _wire.reply_limit(self.proto, self.edns, self.edns_payload, cap)
        if self.edns and self.edns_payload > cap:
            self.wire = _wire.with_payload(self.wire, cap)
            self.edns_payload = cap
            self._message = None

    @property
    def info(self) -> QueryInfo:
        """The fields read from the wire (the request itself)."""
        return self

    # -- Construction ---------------------------------------------------------

    @classmethod
    def from_wire(
        cls,
        wire: bytes,
        client: Client = ("127.0.0.1", 0),
        proto: str = "udp",
    ) -> Request:
        """Read a query (raises ``_wire.WireError`` when it is unreadable)."""
        return cls(wire, client, proto)

    @classmethod
    def from_message(
        cls,
        msg: dns.message.Message,
        client: Client = ("127.0.0.1", 0),
        proto: str = "udp",
    ) -> Request:
        """A request for a dnspython query (tests and plugins that ask the chain)."""
        return cls.from_wire(msg.to_wire(), client, proto)

    def derive(self, qname: str | dns.name.Name | bytes, qtype: int | None = None) -> Request:
        """A copy of this request asking another name (and type).

        ``qname`` is text, a dnspython name, or an uncompressed wire name
        (``b"\\x03www\\x07example\\x00"``, as ``qname_wire``): the bytes need no
        dnspython. The ID, flags and EDNS record are kept. autopath uses this
        to try search-path candidates through the rest of the chain. Raises
        ``ValueError`` for a name that is not a valid question name.
        """
        if isinstance(qname, bytes):
            name_wire = qname
        else:
            name = qname if isinstance(qname, dns.name.Name) else dns.name.from_text(qname)
            name_wire = name.to_wire() or b""
        qt = self.qtype if qtype is None else qtype
        wire = (
            self.wire[: _wire.HEADER_LEN]
            + name_wire
            + struct.pack(">HH", qt, self.qclass)
            + self.wire[self.name_end + 4 :]
        )
        new = Request(wire, self.client, self.proto, self.local)  # WireError is a ValueError
        if new.name_end != _wire.HEADER_LEN + len(name_wire):
            raise ValueError(f"not one wire name: {name_wire!r}")
        new.max_size = _wire.MAX_TCP
        new.route = self.route
        new.resolver = self.resolver
        new.depth = self.depth
        return new

    def with_query(self, wire: bytes) -> Request:
        """A copy of this request whose query is ``wire`` (another question, class or EDNS
        record, as *rewrite* makes): the client, transport, route, server to look up in
        and lookup depth are kept, the reply limit is 65535 bytes (the client's request
        sizes the final reply). Raises ``ValueError`` when ``wire`` is not a query."""
        new = Request(wire, self.client, self.proto, self.local)  # WireError is a ValueError
        new.max_size = _wire.MAX_TCP
        new.route = self.route
        new.resolver = self.resolver
        new.depth = self.depth
        return new

    # -- Where it is served ---------------------------------------------------

    @property
    def zone(self) -> str:
        """The zone of the server block serving this query (``.`` when unrouted)."""
        return self.route.zone

    @property
    def server(self) -> str:
        """The server block's listener as a metric label, e.g. ``dns://:53``."""
        return self.route.server

    # -- The question ---------------------------------------------------------

    @property
    def qname_wire(self) -> bytes:
        """The question name in wire form, letter case as asked."""
        return self.wire[_wire.HEADER_LEN : self.name_end]

    @property
    def name(self) -> str:
        """The question name, lowercased, fully qualified (``example.org.``)."""
        if self._name is None:
            self._name = _wire.name_to_text(self.key[: self.name_end - _wire.HEADER_LEN])
        return self._name

    @property
    def qname(self) -> dns.name.Name:
        """The question name as a dnspython name, letter case as asked."""
        return dns.name.from_wire(self.wire, _wire.HEADER_LEN)[0]

    @property
    def type_name(self) -> str:
        return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(self.qtype))

    @property
    def cd(self) -> bool:
        return bool(self.flags & _wire.FLAG_CD)

    @property
    def rd(self) -> bool:
        return bool(self.flags & _wire.FLAG_RD)

    @property
    def family(self) -> int:
        """1 for IPv4 clients, 2 for IPv6 (CoreDNS's metric label)."""
        return 2 if ":" in self.client[0] else 1

    @property
    def address_family(self) -> int:
        return socket.AF_INET6 if ":" in self.client[0] else socket.AF_INET

    @property
    def message(self) -> dns.message.Message:
        """The query parsed by dnspython (parsed once, on first use)."""
        if self._message is None:
            self._message = dns.message.from_wire(self.wire, ignore_trailing=True)
        return self._message

    # -- Replies --------------------------------------------------------------

    def reply(
        self, rcode: int = dns.rcode.NOERROR, authoritative: bool = False
    ) -> dns.message.Message:
        """An empty reply to build on: question echoed, EDNS (and DO) mirrored at 1232 bytes."""
        msg = dns.message.make_response(self.message, our_payload=_wire.OUR_PAYLOAD)
        msg.set_rcode(dns.rcode.Rcode.make(rcode))
        if self.do:
            msg.ednsflags |= dns.flags.DO
        if authoritative:
            msg.flags |= dns.flags.AA
        return msg

    def error(self, rcode: int) -> bytes:
        """A reply carrying only ``rcode`` (SERVFAIL, REFUSED, ...), built from bytes."""
        return _wire.error_reply(self.wire, self, rcode)

    def to_wire(self, reply: Reply) -> bytes:
        """The reply as it goes on the wire, sized (and truncated) for this client."""
        if type(reply) is bytes:
            return reply if len(reply) <= self.max_size else _wire.fit_reply(reply, self.max_size)
        if isinstance(reply, bytes | bytearray):
            return _wire.fit_reply(bytes(reply), self.max_size)
        return _wire.message_to_wire(reply, self.max_size)

    @property
    def duration(self) -> float:
        """Seconds since the query arrived."""
        return time.perf_counter() - self.started

    def __repr__(self) -> str:
        return f"<Request {self.name} {self.type_name} from {self.client[0]} over {self.proto}>"


# -- Who is given a Request ----------------------------------------------------------


class Handler(Protocol):
    """What a plugin calls as ``self.next``."""

    def handle(self, request: Request) -> Result: ...


class ReplyObserver(Protocol):
    """Told of every reply sent (or dropped, ``b''``): the metrics plugin's hook."""

    def observe(self, request: Request, wire: bytes) -> None:
        """A reply to ``request``."""

    def observe_known(
        self, route: Route, proto: str, client: Client, qtype: int, do: bool,
        answered_by: str, asked: int, wire: bytes, started: float,
    ) -> None:  # fmt: skip
        """A reply from the fast path (``Plugin.serve_known``): no Request was made.

        ``asked`` is the query's size, ``started`` its ``time.perf_counter()``.
        """


class Resolver(Protocol):
    """Asks the server a new question from inside a plugin: what ``plugin.lookup`` calls.

    The server's dispatcher is one: ``resolve`` routes the request to its
    server block as a client's query would be (the longest zone, the class
    check) and runs that block's chain, without sizing the reply for a client
    or telling the observers. It never raises: a failure of the chain becomes
    its error reply (the rcode of a ``PluginError``, SERVFAIL for a bug, which
    is logged and counted as a panic), now or after the wait.
    """

    def resolve(self, request: Request) -> Result: ...


FailureObserver = Callable[[Request, Exception], None]
"""Told of every exception a plugin raised (answered SERVFAIL): CoreDNS's panics."""
