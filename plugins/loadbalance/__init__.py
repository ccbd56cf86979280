"""loadbalance: CoreDNS's round robin of A, AAAA and MX records, CNAMEs first."""

from ._parse import LoadbalanceConfig, parse_loadbalance
from ._plugin import LoadbalancePlugin
from ._reorder import Records, prefer_subnets, reorder_message, reorder_wire, round_robin

__all__ = [
    "LoadbalanceConfig",
    "LoadbalancePlugin",
    "Records",
    "parse_loadbalance",
    "prefer_subnets",
    "reorder_message",
    "reorder_wire",
    "round_robin",
]
