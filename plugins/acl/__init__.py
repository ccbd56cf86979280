"""acl: allow, block, filter or drop queries by type and source network, as CoreDNS's acl."""

from ._plugin import AclPlugin
from ._rules import AclConfig, Action, Rule, parse_acl

__all__ = ["AclConfig", "AclPlugin", "Action", "Rule", "parse_acl"]
