"""forward: CoreDNS's forward plugin, safe against spoofed replies and failing upstreams."""

from ._metrics import ForwardStats, UpstreamCounters
from ._parse import (
    ForwardConfig,
    HealthSettings,
    TlsSettings,
    UpstreamAddress,
    parse_address,
    parse_except,
    parse_forward,
    parse_from,
    parse_policy,
    parse_resolv_conf,
    parse_tls,
    parse_to,
)
from ._plugin import Forwarder, ForwardPlugin
from ._proxy import Proxy

__all__ = [
    "ForwardConfig",
    "ForwardPlugin",
    "ForwardStats",
    "Forwarder",
    "HealthSettings",
    "Proxy",
    "TlsSettings",
    "UpstreamAddress",
    "UpstreamCounters",
    "parse_address",
    "parse_except",
    "parse_forward",
    "parse_from",
    "parse_policy",
    "parse_resolv_conf",
    "parse_tls",
    "parse_to",
]
