"""The acl rules: parsed from the Corefile, evaluated per query. No I/O."""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass

import dns.rdatatype

from pycorefile import Directive, SetupContext, SetupError, parse_zones

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class Action(enum.Enum):
    """What a matching rule does: CoreDNS's four actions."""

    ALLOW = "allow"
    BLOCK = "block"  # REFUSED
    FILTER = "filter"  # NOERROR, empty answer
    DROP = "drop"  # no reply at all


@dataclass(frozen=True)
class Rule:
    """One ``ACTION [type QTYPE...] [net SOURCE...]`` line; empty sets match everything."""

    action: Action
    types: frozenset[int] = frozenset()
    nets: tuple[IPNetwork, ...] = ()

    def matches(self, qtype: int, address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        if self.types and qtype not in self.types:
            return False
        return not self.nets or any(address in net for net in self.nets)


@dataclass(frozen=True)
class AclConfig:
    """The zones the acl applies to and its rules, first match wins, default allow."""

    zones: tuple[str, ...]
    rules: tuple[Rule, ...]

    def decide(self, qtype: int, client_ip: str) -> Action:
        address = ipaddress.ip_address(client_ip.split("%", 1)[0])
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        for rule in self.rules:
            if rule.matches(qtype, address):
                return rule.action
        return Action.ALLOW


def parse_acl(directives: Sequence[Directive], ctx: SetupContext) -> AclConfig:
    """Every ``acl`` directive of a block; rules keep their written order."""
    zones: list[str] = []
    rules: list[Rule] = []
    for d in directives:
        zones.extend(parse_zones(d.args, ctx, d))
        if not d.block:
            raise SetupError("acl needs a block with at least one rule", d)
        rules.extend(_rule(line) for line in d.block)
    return AclConfig(tuple(dict.fromkeys(zones)), tuple(rules))


def _rule(line: Directive) -> Rule:
    try:
        action = Action(line.name.lower())
    except ValueError:
        raise SetupError(
            f"unexpected token '{line.name}'; expect 'allow', 'block', 'filter' or 'drop'", line
        ) from None
    types: set[int] = set()
    nets: list[IPNetwork] = []
    section = ""
    any_type = any_net = False
    for i, arg in enumerate(line.args):
        lowered = arg.lower()
        if lowered in ("type", "net"):
            section = lowered
            continue
        if section == "type":
            if arg == "*":
                any_type = True
                continue
            try:
                types.add(dns.rdatatype.from_text(arg.upper()))
            except dns.rdatatype.UnknownRdatatype:
                raise SetupError(f"unexpected query type '{arg}'", line, i) from None
        elif section == "net":
            if arg == "*":
                any_net = True
                continue
            try:
                nets.append(ipaddress.ip_network(arg, strict=False))
            except ValueError:
                raise SetupError(f"illegal CIDR notation '{arg}'", line, i) from None
        else:
            raise SetupError(f"unexpected token '{arg}'; expect 'type' or 'net'", line, i)
    return Rule(
        action,
        frozenset() if any_type else frozenset(types),
        () if any_net else tuple(nets),
    )
