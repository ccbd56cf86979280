"""The acl rules: parsed from the Corefile, evaluated per query. No I/O.

As CoreDNS: each ``acl [ZONES...] { ... }`` directive is one ``Rule`` with its
own zones, and its lines are its ``Policy`` list. A query is checked against
the rules in the order written; a rule whose zones do not hold the name is
skipped, and so is a rule none of whose policies matches. The first policy
that matches decides; ``allow`` ends the checking. A query nothing decides
is allowed.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import dns.rdatatype

from pycorefile import Directive, SetupContext, SetupError, parse_zones
from pycorefile.zones import match_zone

log = logging.getLogger("pycorefile.acl")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Action(enum.Enum):
    """What a matching policy does: CoreDNS's four actions."""

    ALLOW = "allow"
    BLOCK = "block"  # REFUSED, Extended DNS Error 15 (Blocked)
    FILTER = "filter"  # NOERROR with no records, Extended DNS Error 17 (Filtered)
    DROP = "drop"  # no reply at all


@dataclass(frozen=True)
class Policy:
    """One ``ACTION [type QTYPE...] [net SOURCE...]`` line; empty sets match everything."""

    action: Action
    types: frozenset[int] = frozenset()
    nets: tuple[IPNetwork, ...] = ()

    def matches(self, qtype: int, address: IPAddress) -> bool:
        if self.types and qtype not in self.types:
            return False
        return not self.nets or any(address in net for net in self.nets)


@dataclass(frozen=True)
class Rule:
    """One ``acl`` directive: the zones it guards and its policies, in written order."""

    zones: tuple[str, ...]
    policies: tuple[Policy, ...]

    def action(self, qtype: int, address: IPAddress | None) -> Action | None:
        """The first matching policy's action; None when no policy matches.

        An address that cannot be read is blocked, as CoreDNS does.
        """
        if address is None:
            return Action.BLOCK
        for policy in self.policies:
            if policy.matches(qtype, address):
                return policy.action
        return None


Verdicts = tuple[Action | None, ...]
"""Each rule's ``Rule.action`` for one client and query type, in rule order."""


@dataclass(frozen=True)
class AclConfig:
    """Every ``acl`` directive of a server block, as rules in written order."""

    rules: tuple[Rule, ...]

    def verdicts(self, qtype: int, client_ip: str) -> Verdicts:
        """What each rule says of this client and type, before any zone is checked."""
        address = client_address(client_ip)
        return tuple(rule.action(qtype, address) for rule in self.rules)

    def decide(self, name: str, verdicts: Verdicts) -> tuple[Action, str]:
        """The action for the lowercased FQDN ``name``, and the zone of the rule that decided.

        The zone is ``""`` when the query is allowed (CoreDNS's allowed
        counter has no zone label).
        """
        for rule, action in zip(self.rules, verdicts, strict=True):
            if action is None:
                continue
            zone = match_zone(name, rule.zones)
            if zone is None:
                continue
            if action is Action.ALLOW:
                break
            return action, zone
        return Action.ALLOW, ""


def client_address(client_ip: str) -> IPAddress | None:
    """The client's address as rules match it: IPv4-mapped IPv6 as IPv4, no scope."""
    try:
        address = ipaddress.ip_address(client_ip.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_acl(directives: Sequence[Directive], ctx: SetupContext) -> AclConfig:
    """Every ``acl`` directive of a block: one rule each, in written order."""
    rules = []
    for d in directives:
        zones = tuple(parse_zones(d.args, ctx, d))
        if not d.block:
            # CoreDNS accepts it; it decides nothing.
            log.warning("plugin/acl: %s:%d: acl without rules allows every query", d.file, d.line)
        rules.append(Rule(zones, tuple(_policy(line) for line in d.block or ())))
    return AclConfig(tuple(rules))


def _policy(line: Directive) -> Policy:
    try:
        action = Action(line.name.lower())
    except ValueError:
        raise SetupError(
            f"unexpected token \"{line.name}\"; expect 'allow', 'block', 'filter' or 'drop'", line
        ) from None
    types: set[int] = set()
    nets: list[IPNetwork] = []
    any_type = any_net = False
    has_types = has_nets = False
    args = line.args
    i = 0
    while i < len(args):
        section = args[i].lower()
        if section not in _SECTIONS:
            raise SetupError(f"unexpected token \"{args[i]}\"; expect 'type | net'", line, i)
        start = i + 1
        end = start
        while end < len(args) and args[end].lower() not in _SECTIONS:
            end += 1
        if end == start:
            raise SetupError(f'no token specified in "{section}" section', line, i)
        for index in range(start, end):
            token = args[index]
            if section == "type":
                has_types = True
                if token == "*":
                    any_type = True
                    break  # as CoreDNS, the rest of the section is not read
                types.add(_qtype(token, line, index))
            else:
                has_nets = True
                if token == "*":
                    any_net = True
                    break
                nets.append(_network(token, line, index))
        i = end
    return Policy(
        action,
        frozenset() if any_type or not has_types else frozenset(types),
        () if any_net or not has_nets else tuple(nets),
    )


_SECTIONS = ("type", "net")


def _qtype(token: str, line: Directive, index: int) -> int:
    """A query type by its mnemonic, written in capitals as CoreDNS requires (``A``, ``ANY``)."""
    if token != token.upper() or token.startswith("TYPE"):
        raise SetupError(f'unexpected token "{token}"; expect legal QTYPE', line, index)
    try:
        return int(dns.rdatatype.from_text(token))
    except dns.rdatatype.UnknownRdatatype:
        raise SetupError(f'unexpected token "{token}"; expect legal QTYPE', line, index) from None


def _network(token: str, line: Directive, index: int) -> IPNetwork:
    """An address (a /32 or /128) or a CIDR whose prefix is a length: no netmask, no scope."""
    _, slash, prefix = token.partition("/")
    if "%" in token or (slash and not (prefix.isascii() and prefix.isdigit())):
        raise SetupError(f'illegal CIDR notation "{token}"', line, index)
    try:
        return ipaddress.ip_network(token, strict=False)
    except ValueError:
        raise SetupError(f'illegal CIDR notation "{token}"', line, index) from None
