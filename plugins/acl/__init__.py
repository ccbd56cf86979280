"""acl: allow, block, filter or drop queries by type and source network, as CoreDNS's acl."""

from ._plugin import EDE_BLOCKED, EDE_FILTERED, AclPlugin
from ._rules import AclConfig, Action, Policy, Rule, parse_acl

__all__ = [
    "EDE_BLOCKED",
    "EDE_FILTERED",
    "AclConfig",
    "AclPlugin",
    "Action",
    "Policy",
    "Rule",
    "parse_acl",
]
