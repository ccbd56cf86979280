"""rewrite: rewrites queries before the rest of the chain and replies after, as CoreDNS's."""

from ._plugin import RewritePlugin, apply_response_rules
from ._rules import Rule, new_rule, parse_rewrite

__all__ = ["RewritePlugin", "Rule", "apply_response_rules", "new_rule", "parse_rewrite"]
