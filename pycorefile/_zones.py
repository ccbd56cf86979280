"""Zone names: normalising them, expanding CIDRs, matching names against them."""

from __future__ import annotations

import ipaddress
import socket

import dns.name

from .corefile._keys import KeyProblem, fqdn, is_domain_name
from .corefile._keys import reverse_zones as cidr_reverse_zones


class ZoneError(ValueError):
    """A zone that is not a valid domain name or CIDR."""


def normalize_zone(text: str) -> str:
    """Lowercase and fully qualify a zone (``Example.ORG`` -> ``example.org.``)."""
    if text in ("", "."):
        return "."
    if len(text) > 255:
        raise ZoneError(f"specified zone is too long: {text[:40]}...")
    if not is_domain_name(text):
        raise ZoneError(f"zone is not a valid domain name: {text}")
    return fqdn(text).lower()


def reverse_zones(cidr: str) -> list[str] | None:
    """The reverse zones a CIDR stands for (as server-block keys), None if not a CIDR."""
    try:
        return cidr_reverse_zones(cidr)
    except KeyProblem as exc:
        raise ZoneError(str(exc)) from None


def normalize_zones(args: list[str] | tuple[str, ...]) -> list[str]:
    """Normalise zone arguments of a plugin, expanding CIDRs to reverse zones."""
    out: list[str] = []
    for arg in args:
        expanded = reverse_zones(arg)
        out.extend(expanded if expanded is not None else [normalize_zone(arg)])
    return out


def zone_wire(name: str) -> bytes:
    """The lowercased wire form of a presentation name (routing keys)."""
    wire = dns.name.from_text(name).canonicalize().to_wire()
    assert wire is not None
    return wire


def in_zone(name: str, zone: str) -> bool:
    """True when the lowercased FQDN ``name`` is ``zone`` or below it."""
    return zone == "." or name == zone or name.endswith("." + zone)


def match_zone(name: str, zones: list[str] | tuple[str, ...]) -> str | None:
    """The longest of ``zones`` that ``name`` lies in, or None."""
    best: str | None = None
    for zone in zones:
        if in_zone(name, zone) and (best is None or len(zone) > len(best)):
            best = zone
    return best


def host_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as a hosts file or a Corefile line gives it; None when ``text`` is none.

    A ``%zone`` suffix (``fe80::1%eth0``) is dropped, and an IPv4-mapped IPv6
    address (``::ffff:10.0.0.1``) is the IPv4 one, as Go's ``To4``.
    """
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def reverse_name(address: str) -> str:
    """The PTR owner of a canonical address (``10.0.0.1`` -> ``1.0.0.10.in-addr.arpa.``)."""
    if ":" not in address:
        return ".".join(reversed(address.split("."))) + ".in-addr.arpa."
    nibbles = socket.inet_pton(socket.AF_INET6, address).hex()
    return ".".join(reversed(nibbles)) + ".ip6.arpa."
