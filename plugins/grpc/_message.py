"""gRPC's message framing and CoreDNS's ``DnsPacket``, as plain functions over bytes.

A gRPC message on an HTTP/2 stream is a 5-byte prefix (a compressed flag and
a big-endian length) and the serialized protobuf. ``coredns.dns.DnsPacket``
has one field, ``bytes msg = 1``: on the wire a tag byte ``0x0a``, a varint
length and the DNS message. Nothing here does I/O, and no protobuf package is
needed for one field.
"""

from __future__ import annotations

import struct

QUERY_PATH = "/coredns.dns.DnsService/Query"
"""The RPC CoreDNS's grpc plugin calls (``pb/dns.proto``)."""
MAX_MESSAGE = 65535 + 16
"""The largest reply accepted: a DNS message of 65535 bytes and its protobuf envelope."""
STATUS_OK = 0
STATUS_NOT_FOUND = 5

_PREFIX = struct.Struct(">BI")
_MSG_TAG = 0x0A  # field 1, length-delimited


class MessageError(ValueError):
    """A gRPC reply that cannot be read (bad framing, compression, protobuf)."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise MessageError("truncated varint in protobuf")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def encode_packet(dns_message: bytes) -> bytes:
    """A ``DnsPacket`` holding ``dns_message``, framed as one gRPC message."""
    body = bytes([_MSG_TAG]) + _varint(len(dns_message)) + dns_message
    return _PREFIX.pack(0, len(body)) + body


def decode_packet(body: bytes) -> bytes:
    """The ``msg`` field of a serialized ``DnsPacket`` (unknown fields skipped)."""
    pos, msg = 0, b""
    while pos < len(body):
        key, pos = _read_varint(body, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            _, pos = _read_varint(body, pos)
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        elif wire_type == 2:
            length, pos = _read_varint(body, pos)
            if pos + length > len(body):
                raise MessageError("truncated field in protobuf")
            if field == 1:
                msg = body[pos : pos + length]
            pos += length
        else:
            raise MessageError(f"unsupported protobuf wire type {wire_type}")
        if pos > len(body):
            raise MessageError("truncated protobuf")
    return msg


def split_message(data: bytes) -> bytes:
    """The one gRPC message of a unary reply's DATA frames (prefix checked)."""
    if len(data) < _PREFIX.size:
        raise MessageError("reply shorter than a gRPC message prefix")
    compressed, length = _PREFIX.unpack_from(data)
    if compressed:
        raise MessageError("compressed gRPC reply (no compression was offered)")
    if length > MAX_MESSAGE:
        raise MessageError(f"gRPC reply of {length} bytes is too large")
    body = data[_PREFIX.size : _PREFIX.size + length]
    if len(body) != length:
        raise MessageError("truncated gRPC message")
    return body


def request_headers(authority: str, scheme: str) -> list[tuple[bytes, bytes]]:
    """The HTTP/2 headers of one ``Query`` call."""
    return [
        (b":method", b"POST"),
        (b":scheme", scheme.encode()),
        (b":path", QUERY_PATH.encode()),
        (b":authority", authority.encode()),
        (b"content-type", b"application/grpc"),
        (b"te", b"trailers"),
        (b"grpc-timeout", b"5S"),
        (b"user-agent", b"pycorefile-grpc"),
    ]
