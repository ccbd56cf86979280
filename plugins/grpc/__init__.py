"""grpc: forward queries over gRPC to CoreDNS's ``coredns.dns.DnsService``."""

from ._channel import Channel, GrpcError
from ._message import decode_packet, encode_packet, split_message
from ._parse import GrpcConfig, parse_grpc
from ._plugin import GrpcPlugin

__all__ = [
    "Channel",
    "GrpcConfig",
    "GrpcError",
    "GrpcPlugin",
    "decode_packet",
    "encode_packet",
    "parse_grpc",
    "split_message",
]
