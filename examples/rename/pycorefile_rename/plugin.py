"""The rename plugin: asks the rest of the chain a renamed question, renames the reply back."""

from __future__ import annotations

from collections.abc import Sequence

import dns.message
import dns.rcode

from pycorefile import Directive, Plugin, Reply, Request, Result, SetupContext, then

from .rules import RenameConfig, Rule, parse_rename, rename_reply
from .wire import rename_wire


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
        asked = request.qname_wire
        rule = self.config.rule_for(asked.lower())
        if rule is None:
            return self.next.handle(request)  # not ours: the same request, the same result
        new_name = rule.forward(asked)
        if new_name is None:
            return request.error(dns.rcode.YXDOMAIN)  # as a DNAME whose result is too long
        renamed = request.derive(new_name)
        result = self.next.handle(renamed)
        self._credit(request, renamed)
        return then(result, lambda reply: self._back(request, renamed, rule, reply))

    @staticmethod
    def _credit(request: Request, renamed: Request) -> None:
        """Credit whoever answered (or started waiting for) the renamed question.

        A renamed cache hit is the cache's, not ours: the metrics count it
        under ``plugin="cache"``.
        """
        if renamed.answered_by:
            request.answered_by = renamed.answered_by

    def _back(self, request: Request, renamed: Request, rule: Rule, reply: Reply) -> Reply:
        """The reply to ``renamed`` as the reply to ``request``: now, or once the wait is over."""
        self._credit(request, renamed)  # again: a plugin may credit another once its wait is over
        if isinstance(reply, bytes):
            if not reply:
                return reply  # DROP: nothing is sent
            # Bytes (a cache hit): renamed as bytes when they have the usual shape.
            wire = rename_wire(reply, rule, request.qname_wire, renamed.qname_wire)
            if wire is not None:
                return wire
            reply = dns.message.from_wire(reply)  # a Message of our own
        # A Message that comes back is ours to change (its producer keeps no reference).
        return rename_reply(reply, rule, request.qname, renamed.qname)
