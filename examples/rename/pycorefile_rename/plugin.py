"""The rename plugin: asks the rest of the chain a renamed question, renames the reply back."""

from __future__ import annotations

from collections.abc import Sequence

from pycorefile import Directive, Plugin, Request, Result, SetupContext
from pycorefile.rename import ask_renamed

from .rules import RenameConfig, parse_rename


class RenamePlugin(Plugin):
    """``rename FROM TO``: a question at or under FROM is asked under TO instead.

    The plugins after it (cache, forward, ...) see only the renamed question;
    the client sees only the name it asked.
    """

    before = "cache"  # the cache keeps renamed answers: every name renamed to one shares them
    repeatable = True  # several rename lines in one block reach one setup call

    def __init__(self, config: RenameConfig) -> None:
        self.config = config

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> RenamePlugin:
        return cls(parse_rename(directives))

    def handle(self, request: Request) -> Result:
        rule = self.config.rule_for(request.qname_wire.lower())
        if rule is None:
            return self.next.handle(request)  # not ours: the same request, the same result
        # The renamed copy asked, the reply renamed back now or after a wait, the
        # plugin that answered credited (a renamed cache hit counts under "cache").
        return ask_renamed(self.next, request, rule)
