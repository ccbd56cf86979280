"""The request a plugin sees: read lazily from the query's bytes."""

from __future__ import annotations

import socket
import struct
import time
from typing import TYPE_CHECKING, Union

import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdatatype

from . import _wire
from ._wire import QueryInfo

if TYPE_CHECKING:
    from ._chain import Handler

_KEY_SUFFIX = (b"\x00\x00", b"\x00\x01", b"\x01\x00", b"\x01\x01")
"""The DO and CD bits as the last two bytes of a request key."""

Reply = Union[bytes, dns.message.Message]
"""What a handler returns: finished wire bytes or a dnspython message."""


class Request:
    """One DNS query on its way through a plugin chain.

    The fields the hot path needs (ID, question bytes, type, EDNS and DO) are
    read from the wire without dnspython. ``message``, ``qname`` and ``name``
    are parsed on first use only, so a plugin that answers from prepared bytes
    never pays for them.
    """

    __slots__ = (
        "_message",
        "_name",
        "answered_by",
        "chain",
        "client",
        "info",
        "key",
        "local",
        "max_size",
        "proto",
        "server",
        "started",
        "wire",
        "zone",
    )

    def __init__(
        self,
        wire: bytes,
        info: QueryInfo,
        client: tuple[str, int] | tuple[str, int, int, int],
        proto: str = "udp",
        local: tuple[str, int] | None = None,
        server_cap: int = _wire.OUR_PAYLOAD,
    ) -> None:
        self.wire = wire
        self.info = info
        self.client = client
        self.proto = proto
        self.local = local
        if proto != "udp":
            self.max_size = _wire.MAX_TCP
        elif info.edns:
            self.max_size = min(info.edns_payload, server_cap)
        else:
            self.max_size = 512
        end = info.name_end
        # The cache key: the lowercased question plus the bits that change the answer.
        self.key = (
            wire[12:end].lower()
            + wire[end : end + 4]
            + _KEY_SUFFIX[(2 if info.do else 0) | (1 if info.flags & 0x10 else 0)]
        )
        self._message: dns.message.Message | None = None
        self._name: str | None = None
        self.answered_by = ""
        self.zone = "."
        self.server = ""
        self.chain: Handler | None = None
        self.started = time.perf_counter()

    # -- Construction ---------------------------------------------------------

    @classmethod
    def from_wire(
        cls,
        wire: bytes,
        client: tuple[str, int] | tuple[str, int, int, int] = ("127.0.0.1", 0),
        proto: str = "udp",
    ) -> Request:
        """Read a query (raises ``_wire.WireError`` when it is unreadable)."""
        return cls(wire, _wire.read_query(wire), client, proto)

    @classmethod
    def from_message(
        cls,
        msg: dns.message.Message,
        client: tuple[str, int] | tuple[str, int, int, int] = ("127.0.0.1", 0),
        proto: str = "udp",
    ) -> Request:
        """A request for a dnspython query (tests and plugins that ask the chain)."""
        return cls.from_wire(msg.to_wire(), client, proto)

    def derive(self, qname: str | dns.name.Name, qtype: int | None = None) -> Request:
        """A copy of this request asking another name (and type).

        The ID, flags and EDNS record are kept. autopath uses this to try
        search-path candidates through the rest of the chain.
        """
        name = qname if isinstance(qname, dns.name.Name) else dns.name.from_text(qname)
        info = self.info
        qt = info.qtype if qtype is None else qtype
        name_wire = name.to_wire()
        assert name_wire is not None
        wire = (
            self.wire[: _wire.HEADER_LEN]
            + name_wire
            + struct.pack(">HH", qt, info.qclass)
            + self.wire[info.name_end + 4 :]
        )
        new = Request(wire, _wire.read_query(wire), self.client, self.proto, self.local)
        new.max_size = _wire.MAX_TCP
        new.zone = self.zone
        new.server = self.server
        new.chain = self.chain
        return new

    # -- The question ---------------------------------------------------------

    @property
    def id(self) -> int:
        return self.info.id

    @property
    def qtype(self) -> int:
        return self.info.qtype

    @property
    def qclass(self) -> int:
        return self.info.qclass

    @property
    def qname_wire(self) -> bytes:
        """The question name in wire form, letter case as asked."""
        return self.wire[_wire.HEADER_LEN : self.info.name_end]

    @property
    def name(self) -> str:
        """The question name, lowercased, fully qualified (``example.org.``)."""
        if self._name is None:
            self._name = _wire.name_to_text(self.key[: self.info.name_end - _wire.HEADER_LEN])
        return self._name

    @property
    def qname(self) -> dns.name.Name:
        """The question name as a dnspython name, letter case as asked."""
        return dns.name.from_wire(self.wire, _wire.HEADER_LEN)[0]

    @property
    def type_name(self) -> str:
        return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(self.info.qtype))

    @property
    def edns(self) -> bool:
        return self.info.edns

    @property
    def do(self) -> bool:
        """The DNSSEC OK bit of the query's EDNS record."""
        return self.info.do

    @property
    def cd(self) -> bool:
        return bool(self.info.flags & _wire.FLAG_CD)

    @property
    def rd(self) -> bool:
        return bool(self.info.flags & _wire.FLAG_RD)

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
        if self.info.do:
            msg.ednsflags |= dns.flags.DO
        if authoritative:
            msg.flags |= dns.flags.AA
        return msg

    def error(self, rcode: int) -> bytes:
        """A reply carrying only ``rcode`` (SERVFAIL, REFUSED, ...), built from bytes."""
        return _wire.error_reply(self.wire, self.info, rcode)

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
