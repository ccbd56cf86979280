"""The rewrite plugin: asks the rest of the chain a rewritten question, reverts the reply."""

from __future__ import annotations

from collections.abc import Sequence

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from pycorefile import (
    Directive,
    Plugin,
    PluginError,
    Reply,
    Request,
    Result,
    SetupContext,
    lookup,
    pass_on,
    reply_message,
    then,
)
from pycorefile.rename import (
    ANSWER,
    NAME_FIELDS,
    Record,
    records,
    restore_question,
    set_records,
)

from ._rules import (
    STOP,
    CnameRule,
    CnameTargetRule,
    EdnsRevert,
    Question,
    RcodeRule,
    ResponseRule,
    Rule,
    parse_rewrite,
)


class RewritePlugin(Plugin):
    """Rewrites the question before the rest of the chain sees it, and the reply after.

    Rules run in Corefile order on the question as the rules before left it; a
    matching ``stop`` rule (the default) ends them. The rest of the chain sees
    only the rewritten question; the client gets its own question back, with
    the response rules of the matching rules applied to every record in
    reverse rule order.
    """

    repeatable = True  # one rule per line

    def __init__(self, rules: tuple[Rule, ...]) -> None:
        self.rules = rules

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> RewritePlugin:
        return cls(parse_rewrite(directives))

    def handle(self, request: Request) -> Result:
        question = Question(request, request.name, request.qtype, request.qclass)
        responses: list[ResponseRule] = []
        matched = False
        for rule in self.rules:
            before = question.name
            found = rule.rewrite(question)
            if found is None:
                continue
            matched = True
            if question.name != before and not _valid_name(question.name):
                raise PluginError(f"invalid name after rewrite: {question.name}")
            responses.extend(found)
            if rule.mode == STOP:
                break
        if not matched:
            return self.next.handle(request)  # not ours: the same request, the same result
        inner = _rewritten(request, question)
        result = pass_on(
            self.next,
            inner,
            lambda reply: self._revert(request, inner, responses, reply),
            lambda exc: self._failed(request, inner, responses, exc),
        )
        _credit(request, inner)
        return result

    # -- The way back ---------------------------------------------------------------------

    def _revert(
        self, request: Request, inner: Request, responses: list[ResponseRule], reply: Reply
    ) -> Result:
        """The reply to the rewritten question as the reply to the client's: its question
        back, the response rules applied to every record in reverse rule order."""
        _credit(request, inner)
        if not reply:
            return reply  # dropped: nothing is sent
        msg = reply_message(reply)  # a Message of our own (or one given to us)
        restore_question(msg, request.qname, request.qtype, request.qclass)
        if not request.edns:
            msg.use_edns(False)  # an OPT a rule added to the request never reaches the client
        if not responses:
            return msg
        apply_response_rules(msg, responses)
        cnames = [rule.rule for rule in reversed(responses) if isinstance(rule, CnameRule)]
        for cname in cnames:
            found = _cname_to_rewrite(msg, cname)
            if found is not None:
                target, answers = found
                msg.answer = answers
                looked_up = lookup(inner, target, inner.qtype)
                return then(looked_up, lambda up: _appended(msg, up))
        return msg

    def _failed(
        self, request: Request, inner: Request, responses: list[ResponseRule], exc: Exception
    ) -> Reply:
        """A failure of the rest of the chain; written by us when an rcode rule turns its
        rcode into another (CoreDNS writes every such reply through its reverter)."""
        _credit(request, inner)
        if not isinstance(exc, PluginError):
            raise exc
        rcode: int = exc.rcode
        for rule in reversed(responses):
            if isinstance(rule, RcodeRule):
                rcode = rule.rcode(rcode)
        if rcode == exc.rcode:
            raise exc
        return request.reply(rcode)


def apply_response_rules(msg: dns.message.Message, responses: list[ResponseRule]) -> None:
    """Every record of authority, answer and additional through the response rules, last
    rule first (CoreDNS's reverter); rcode rules once more for a reply with no record."""
    rules = list(reversed(responses))
    rcode = int(msg.rcode())
    changed: list[Record] = []
    all_records = records(msg)
    for record in all_records:
        for rule in rules:
            rcode = rule.rcode(rcode)
            if isinstance(rule, EdnsRevert):
                continue
            record.ttl = rule.ttl(record.ttl)
            owner = record.name.to_text()
            new_owner = rule.owner(owner)
            if new_owner != owner:
                record.name = _name_or(new_owner, None) or record.name
            fields = NAME_FIELDS.get(record.rdtype, ())
            for name in fields:
                value = getattr(record.rdata, name).to_text()
                new_value = rule.value(value)
                if new_value != value:
                    renamed = _name_or(new_value, None)
                    if renamed is not None:
                        record.rdata = record.rdata.replace(**{name: renamed})
        changed.append(record)
    if not all_records:
        for rule in rules:
            if rule.message_level:
                rcode = rule.rcode(rcode)
    set_records(msg, changed)
    msg.set_rcode(dns.rcode.Rcode.make(rcode))
    _revert_options(msg, rules)


def _revert_options(msg: dns.message.Message, rules: list[ResponseRule]) -> None:
    reverts = [rule for rule in rules if isinstance(rule, EdnsRevert)]
    if not reverts or msg.edns < 0:
        return
    options = list(msg.options)
    for rule in reverts:
        for index, option in enumerate(options):
            if option.otype == rule.code:
                if rule.old is None:
                    del options[index]
                else:
                    options[index] = rule.old
                break
    msg.use_edns(msg.edns, msg.ednsflags, msg.payload, options=options)


def _cname_to_rewrite(
    msg: dns.message.Message, rule: CnameTargetRule
) -> tuple[dns.name.Name, list[dns.rrset.RRset]] | None:
    """The first answer CNAME whose target the rule rewrites: the new target, and the answer
    cut after that CNAME (CNAMEs before it kept, its target rewritten)."""
    kept: list[Record] = []
    for record in records(msg):
        if record.section != ANSWER or record.rdtype != dns.rdatatype.CNAME:
            continue
        kept.append(record)
        target_text = record.rdata.target.to_text()  # type: ignore[attr-defined]
        new_text = rule.new_target(target_text)
        if new_text is None or new_text == target_text:
            continue
        target = _name_or(new_text, None)
        if target is None:
            return None
        record.rdata = record.rdata.replace(target=target)
        answer_only = dns.message.Message()
        set_records(answer_only, kept)
        return target, answer_only.answer
    return None


def _appended(msg: dns.message.Message, reply: Reply) -> Reply:
    """The looked-up target's answers after the kept CNAMEs; its TC bit taken over."""
    if not reply:
        return msg
    looked_up = reply_message(reply)
    msg.answer.extend(looked_up.answer)
    if looked_up.flags & dns.flags.TC:
        msg.flags |= dns.flags.TC
    else:
        msg.flags &= ~dns.flags.TC
    return msg


def _credit(request: Request, inner: Request) -> None:
    """Whoever answered the rewritten question answered the client's (a cache hit is the
    cache's)."""
    if inner.answered_by:
        request.answered_by = inner.answered_by


def _valid_name(text: str) -> bool:
    """CoreDNS's ``dns.IsDomainName``: labels of 1 to 63 bytes, 255 bytes in all."""
    try:
        dns.name.from_text(text)
    except dns.exception.DNSException:
        return False
    return True


def _name_or(text: str, default: dns.name.Name | None) -> dns.name.Name | None:
    try:
        return dns.name.from_text(text)
    except dns.exception.DNSException:
        return default


def _rewritten(request: Request, question: Question) -> Request:
    """The request the rest of the chain sees: the rewritten name, type, class and options."""
    name_changed = question.name != request.name
    if question.qclass == request.qclass and question.options is None:
        if not name_changed and question.qtype == request.qtype:
            return request  # only the reply changes (ttl, rcode rules)
        name = dns.name.from_text(question.name) if name_changed else request.qname_wire
        return request.derive(name, question.qtype)
    query = dns.message.Message(id=request.id)
    query.flags = request.flags & 0xFFF0 & ~dns.flags.QR
    query.question = [
        dns.rrset.RRset(
            dns.name.from_text(question.name) if name_changed else request.qname,
            dns.rdataclass.RdataClass.make(question.qclass),
            dns.rdatatype.RdataType.make(question.qtype),
        )
    ]
    original = request.message
    if question.options is None:
        if original.edns >= 0:
            query.use_edns(
                original.edns, original.ednsflags, original.payload, options=list(original.options)
            )
    elif original.edns >= 0:
        query.use_edns(
            original.edns, original.ednsflags, original.payload, options=question.options
        )
    else:  # as CoreDNS: an OPT record is added to the request (4096 bytes, DO clear)
        query.use_edns(0, 0, 4096, options=question.options)
    return request.with_query(query.to_wire())
