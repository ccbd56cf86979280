"""What a view expression can ask about a query: CoreDNS's expression environment."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import dns.opcode
import dns.rdataclass

from pycorefile import Request

from ._expr import Signature

SIGNATURES: dict[str, Signature] = {
    "type": Signature((), "str"),
    "name": Signature((), "str"),
    "class": Signature((), "str"),
    "proto": Signature((), "str"),
    "size": Signature((), "int"),
    "bufsize": Signature((), "int"),
    "do": Signature((), "bool"),
    "id": Signature((), "int"),
    "opcode": Signature((), "int"),
    "client_ip": Signature((), "str"),
    "server_ip": Signature((), "str"),
    "port": Signature((), "str"),
    "server_port": Signature((), "str"),
    "incidr": Signature(("str", "str"), "bool"),
    "metadata": Signature(("str",), "str"),
}
"""Every function an expression may call, with its argument and result types."""


def incidr(ip: str, cidr: str) -> bool:
    """True when ``ip`` lies in ``cidr`` (host bits allowed, as Go's ParseCIDR)."""
    address = ipaddress.ip_address(ip)
    network = ipaddress.ip_network(cidr, strict=False)
    if isinstance(address, ipaddress.IPv6Address) and network.version == 4:
        address = address.ipv4_mapped or address  # Go unmaps ::ffff:a.b.c.d
    return address in network


def _plain_ip(address: str) -> str:
    return address.split("%", 1)[0]


class QueryEnvironment(Mapping[str, Callable[..., Any]]):
    """The functions of ``SIGNATURES`` over one query, looked up by name."""

    __slots__ = ("request",)

    def __init__(self, request: Request) -> None:
        self.request = request

    def __getitem__(self, name: str) -> Callable[..., Any]:
        return getattr(self, "_" + name)  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(SIGNATURES)

    def __len__(self) -> int:
        return len(SIGNATURES)

    def _type(self) -> str:
        return self.request.type_name

    def _name(self) -> str:
        return self.request.name

    def _class(self) -> str:
        return dns.rdataclass.to_text(dns.rdataclass.RdataClass.make(self.request.qclass))

    def _proto(self) -> str:
        return self.request.proto

    def _size(self) -> int:
        return len(self.request.wire)

    def _bufsize(self) -> int:
        request = self.request
        if request.proto == "tcp":
            return 65535
        return max(512, request.edns_payload) if request.edns else 512

    def _do(self) -> bool:
        return self.request.do

    def _id(self) -> int:
        return self.request.id

    def _opcode(self) -> int:
        return int(dns.opcode.Opcode(self.request.opcode))

    def _client_ip(self) -> str:
        return _plain_ip(self.request.client[0])

    def _port(self) -> str:
        return str(self.request.client[1])

    def _server_ip(self) -> str:
        local = self.request.local
        return _plain_ip(local[0]) if local else ""

    def _server_port(self) -> str:
        local = self.request.local
        return str(local[1]) if local else ""

    @staticmethod
    def _incidr(ip: str, cidr: str) -> bool:
        return incidr(ip, cidr)

    @staticmethod
    def _metadata(label: str) -> str:
        return ""  # no plugin here publishes metadata yet: CoreDNS's value for an absent label
