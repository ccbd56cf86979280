"""Zone names: normalising them, expanding CIDRs, matching names against them."""

from __future__ import annotations

import ipaddress

import dns.name


class ZoneError(ValueError):
    """A zone that is not a valid domain name or CIDR."""


def normalize_zone(text: str) -> str:
    """Lowercase and fully qualify a zone (``Example.ORG`` -> ``example.org.``)."""
    if text in ("", "."):
        return "."
    if len(text) > 255:
        raise ZoneError(f"specified zone is too long: {text[:40]}...")
    try:
        return dns.name.from_text(text).to_text().lower()
    except dns.exception.DNSException as exc:
        raise ZoneError(f"zone is not a valid domain name: {text}") from exc


def reverse_zones(cidr: str) -> list[str] | None:
    """The reverse zones a CIDR stands for, or None when ``cidr`` is not one.

    Prefixes off an octet (IPv4) or nibble (IPv6) boundary are split into one
    zone per value, as CoreDNS does: ``10.0.0.0/15`` gives two zones.
    """
    if "/" not in cidr:
        return None
    if cidr.startswith(":") or cidr.startswith("0:"):
        raise ZoneError(f"invalid CIDR: {cidr}")
    try:
        net = ipaddress.ip_network(cidr, strict=False)
    except ValueError as exc:
        raise ZoneError(f"invalid CIDR: {cidr}") from exc
    unit = 8 if net.version == 4 else 4
    rounded = -(-net.prefixlen // unit) * unit
    if rounded == net.prefixlen:
        starts = [net.network_address]
    else:
        starts = [sub.network_address for sub in net.subnets(new_prefix=rounded)]
    zones = []
    for address in starts:
        labels = address.reverse_pointer.split(".")
        keep = rounded // unit
        # reverse_pointer lists every unit; keep the leading `keep` units (the tail).
        total = 4 if net.version == 4 else 32
        zones.append(".".join(labels[total - keep :]) + ".")
    return zones


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
