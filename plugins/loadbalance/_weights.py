"""The ``weighted`` policy: a weight file, and picking the first address by weight.

Pure: ``parse_weights`` reads a weight file's text with CoreDNS's rules and
messages, ``weighted_order`` gives one section's new order. Reading the file
and reloading it on change is the plugin's.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ._reorder import TYPE_A, TYPE_AAAA, Records, address_of, partition

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
MAX_WEIGHT = 255


class WeightFileError(ValueError):
    """A weight file that cannot be used (CoreDNS's message)."""


@dataclass(frozen=True)
class Weights:
    """Per owner name (FQDN, as written: matched case-sensitively, as CoreDNS), the
    weight of each address; an address not listed weighs 1."""

    domains: dict[str, list[tuple[Address, int]]] = field(default_factory=dict)

    def weight(self, owner: str, address: Address | None) -> int:
        for listed, weight in self.domains.get(owner, ()):
            if listed == address:
                return weight
        return 1


def parse_weights(text: str, file_name: str) -> Weights:
    """A weight file: ``# comments``, a domain name alone on a line, then
    ``ADDRESS WEIGHT`` lines (WEIGHT 1 to 255) for it."""
    domains: dict[str, list[tuple[Address, int]]] = {}
    domain = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) == 1:
            if _ip(fields[0]) is not None:
                raise WeightFileError(
                    f'wrong domain name:"{fields[0]}" in weight file {file_name}. '
                    "(Maybe a missing weight value?)"
                )
            domain = fields[0] if fields[0].endswith(".") else fields[0] + "."
            domains.setdefault(domain, [])
        elif len(fields) == 2:
            address = _ip(fields[0])
            if address is None:
                raise WeightFileError(f'wrong IP address:"{fields[0]}" in weight file {file_name}')
            text_weight = fields[1]
            weight = int(text_weight) if text_weight.isascii() and text_weight.isdigit() else 0
            if not 1 <= weight <= MAX_WEIGHT:
                raise WeightFileError(
                    f'wrong weight value:"{text_weight}" in weight file {file_name}'
                )
            if not domain:
                raise WeightFileError(f"missing domain name in weight file {file_name}")
            domains[domain].append((address, weight))
        else:
            raise WeightFileError(
                f'could not parse weight line:"{line}" in weight file {file_name}'
            )
    return Weights(domains)


def _ip(text: str) -> Address | None:
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


WEIGHTED_TYPES = (TYPE_A, TYPE_AAAA, 33)
"""The question types whose replies the weighted policy reorders (A, AAAA, SRV)."""


def weighted_order(
    types: Sequence[int],
    records: Records,
    weights: Weights,
    draw: Callable[[int], int] = random.randrange,
) -> list[int]:
    """One section's new order under ``weighted``, as CoreDNS's.

    Without addresses the order is kept. Else: CNAMEs, the other types, the
    addresses, MX records (each in their order), except that one address,
    picked with a probability proportional to its weight, is swapped into the
    first place among the addresses. ``draw(n)`` is a random integer below n.
    """
    cnames, rest, addresses, mx = partition(types, range(len(types)))
    if not addresses:
        return list(range(len(types)))
    scored = [
        (weights.weight(records.owner(i), address_of(types[i], records.rdata(i))), place)
        for place, i in enumerate(addresses)
    ]
    # Heaviest first, as CoreDNS tries them (equal weights keep their order).
    scored.sort(key=lambda item: -item[0])
    value = draw(sum(weight for weight, _ in scored))
    top = scored[-1][1]
    for weight, place in scored:
        if value < weight:
            top = place
            break
        value -= weight
    addresses[0], addresses[top] = addresses[top], addresses[0]
    return cnames + rest + addresses + mx
