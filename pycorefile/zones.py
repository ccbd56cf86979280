"""Zone names, as plugins take them from the Corefile and match queries against them.

Zones are absolute, lower-case text names (``example.org.``); a CIDR given as a
zone (``10.0.0.0/24``) expands to its reverse zones, as in CoreDNS.
"""

from __future__ import annotations

from ._zones import (
    ZoneError,
    host_address,
    in_zone,
    match_zone,
    normalize_zone,
    normalize_zones,
    reverse_name,
    reverse_zones,
)

__all__ = [
    "ZoneError",
    "host_address",
    "in_zone",
    "match_zone",
    "normalize_zone",
    "normalize_zones",
    "reverse_name",
    "reverse_zones",
]
