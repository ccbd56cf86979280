"""The template plugin: answers from Go templates, as CoreDNS's template."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import dns.edns
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import dns.tokenizer
import dns.ttl

from pycorefile import (
    Directive,
    Plugin,
    PluginError,
    Reply,
    Request,
    Result,
    SetupContext,
    lookup,
    reply_message,
    then,
)
from pycorefile.zones import match_zone

from ._gotemplate import GoStruct, TemplateExecError
from ._parse import RecordTemplate, Template, TemplateConfig, parse_template

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric

ANY = 255
DEFAULT_TTL = 3600
"""miekg/dns's ``NewRR``: a record without a TTL lives an hour."""
_CLASS_NAMES = {"IN", "CS", "CH", "HS", "NONE", "ANY"}


class RecordError(ValueError):
    """A rendered template is not a resource record (CoreDNS's rr_failures)."""


class TemplatePlugin(Plugin):
    """Answers a query with records made from Go templates when a regex matches its name."""

    repeatable = True  # each template line is one template; all form one plugin

    def __init__(self, config: TemplateConfig) -> None:
        self.config = config
        self.zones = config.zones
        self.matches: Counter[tuple[str, str, str, str, str]] = Counter()
        self.template_failures: Counter[tuple[str, str, str, str, str, str, str]] = Counter()
        self.rr_failures: Counter[tuple[str, str, str, str, str, str, str]] = Counter()

    @classmethod
    def setup(cls, directives: Sequence[Directive], ctx: SetupContext) -> TemplatePlugin:
        return cls(parse_template(directives, ctx))

    # -- Serving ----------------------------------------------------------------------

    def handle(self, request: Request) -> Result:
        name = request.name
        if match_zone(name, self.zones) is None:
            return self.next.handle(request)
        for template in self.config.templates:
            data = self._match(template, request, name)
            if data is None:
                continue
            if data is False:
                raise PluginError(f"template: no regex matched {name}")
            assert isinstance(data, GoStruct)
            return self._answer(template, request, data)
        return self.next.handle(request)

    @staticmethod
    def _match(template: Template, request: Request, name: str) -> GoStruct | bool | None:
        """The template's data for this query; None to try the next template; False when
        the zone is the template's but no regex matched and it does not fall through."""
        zone = match_zone(name, template.zones)
        if zone is None:
            return None
        qclass, qtype = request.qclass, request.qtype
        if template.qclass != ANY and qclass != ANY and qclass != template.qclass:
            return None
        if template.qtype != ANY and qtype != ANY and qtype != template.qtype:
            return None
        for regex in template.regexes:
            found = regex.search(name)
            if found is None:
                continue
            groups = [found.group(0), *(g or "" for g in found.groups())]
            group_map = {str(index): value for index, value in enumerate(groups)}
            for group_name, value in found.groupdict().items():
                group_map[group_name] = value or ""
            return _data(template, request, name, zone, regex.pattern, groups, group_map)
        through = template.fallthrough is not None and template.fallthrough.through(name)
        return None if through else False

    def _answer(self, template: Template, request: Request, data: GoStruct) -> Result:
        fields = data.fields
        labels = (
            request.server,
            fields["Zone"],
            request.route.view,
            fields["Class"],
            fields["Type"],
        )
        self.matches[labels] += 1
        if template.rcode == 2:  # SERVFAIL: not written, as CoreDNS
            raise PluginError(f"template: rcode SERVFAIL for {request.name}")
        msg = request.reply(template.rcode, authoritative=True)
        chase: list[dns.name.Name] = []
        for record in template.records:
            rrset = self._render(record, data, labels)
            section = {"answer": msg.answer, "additional": msg.additional}.get(
                record.section, msg.authority
            )
            section.append(rrset)
            if (
                record.section == "answer"
                and rrset.rdtype == dns.rdatatype.CNAME
                and request.qtype in (dns.rdatatype.A, dns.rdatatype.AAAA)
            ):
                chase.append(rrset[0].target)
        if template.ederror is not None and request.edns:
            code, reason = template.ederror
            ede = dns.edns.EDEOption(dns.edns.EDECode.make(code), reason or None)
            msg.use_edns(msg.edns, msg.ednsflags, msg.payload, options=[*msg.options, ede])
        if not chase:
            return msg
        return self._chase(request, msg, chase, 0)

    def _chase(
        self, request: Request, msg: dns.message.Message, targets: list[dns.name.Name], index: int
    ) -> Result:
        """Look the CNAME targets up through the server, one after the other, and append
        what each answers (CoreDNS's ``upstream.Lookup``; a failure adds nothing)."""
        while index < len(targets):
            result = lookup(request, targets[index], request.qtype)
            index += 1
            if not isinstance(result, bytes | dns.message.Message):
                return then(result, self._next_chase(request, msg, targets, index))
            _append_answer(msg, result)
        return msg

    def _next_chase(
        self, request: Request, msg: dns.message.Message, targets: list[dns.name.Name], index: int
    ) -> Callable[[Reply], Result]:
        """What to do once the lookup before ``index`` answers: add it, go on from ``index``."""

        def chased(reply: Reply) -> Result:
            _append_answer(msg, reply)
            return self._chase(request, msg, targets, index)

        return chased

    def _render(
        self, record: RecordTemplate, data: GoStruct, labels: tuple[str, str, str, str, str]
    ) -> dns.rrset.RRset:
        failure = (*labels, record.section, record.text)
        try:
            text = record.template.render(data)
        except TemplateExecError as exc:
            self.template_failures[failure] += 1
            raise PluginError(f"template: {record.section} template: {exc}") from None
        try:
            return parse_record(text)
        except RecordError as exc:
            self.rr_failures[failure] += 1
            raise PluginError(f"template: {record.section} record {text!r}: {exc}") from None

    # -- Metrics ----------------------------------------------------------------------

    def metrics(self) -> Iterable[Metric]:
        from prometheus_client.core import CounterMetricFamily  # at scrape time (~2 MB)

        matches = CounterMetricFamily(
            "coredns_template_matches",
            "Counter of template regex matches.",
            labels=["server", "zone", "view", "class", "type"],
        )
        for labels, count in self.matches.items():
            matches.add_metric(list(labels), count)
        families = [matches]
        for name, doc, counts in (
            ("coredns_template_template_failures", "Counter of go template failures.",
             self.template_failures),
            ("coredns_template_rr_failures", "Counter of mis-templated RRs.", self.rr_failures),
        ):  # fmt: skip
            family = CounterMetricFamily(
                name, doc, labels=["server", "zone", "view", "class", "type", "section", "template"]
            )
            for failure, count in counts.items():
                family.add_metric(list(failure), count)
            families.append(family)
        return families


def _append_answer(msg: dns.message.Message, reply: Reply) -> None:
    if not reply:
        return  # dropped: nothing to add
    looked_up = reply_message(reply)
    msg.answer.extend(looked_up.answer)
    if looked_up.flags & dns.flags.TC:
        msg.flags |= dns.flags.TC
    else:
        msg.flags &= ~dns.flags.TC


def _data(
    template: Template,
    request: Request,
    name: str,
    zone: str,
    regex: str,
    groups: list[str],
    group_map: dict[str, str],
) -> GoStruct:
    """CoreDNS's ``templateData`` for one matched query."""
    qclass, qtype = request.qclass, request.qtype
    question = GoStruct(
        "*dns.Question",
        {"Name": request.qname.to_text(), "Qtype": qtype, "Qclass": qclass},
    )
    flags = request.flags
    message = GoStruct(
        "*dns.Msg",
        {
            "Id": request.id,
            "Response": bool(flags & 0x8000),
            "Opcode": request.opcode,
            "Authoritative": bool(flags & 0x0400),
            "Truncated": bool(flags & 0x0200),
            "RecursionDesired": bool(flags & 0x0100),
            "RecursionAvailable": bool(flags & 0x0080),
            "Zero": bool(flags & 0x0040),
            "AuthenticatedData": bool(flags & 0x0020),
            "CheckingDisabled": bool(flags & 0x0010),
            "Rcode": flags & 0x000F,
            "Question": [question],
        },
    )
    fields: dict[str, Any] = {
        "Zone": zone,
        "Name": name,
        "Regex": regex,
        "Match": groups,
        "Group": group_map,
        "Class": _text(dns.rdataclass, qclass if qclass != ANY else template.qclass),
        "Type": _text(dns.rdatatype, qtype if qtype != ANY else template.qtype),
        "Message": message,
        "Question": question,
        "Remote": request.client[0],
        "Var": {},
    }
    return GoStruct("*template.templateData", fields, {"Meta": _no_metadata})


def _text(module: Any, value: int) -> str:
    text: str = module.to_text(value)
    return text


def _no_metadata(*args: Any) -> str:
    """``.Meta "name"``: pycorefile has no metadata plugin yet, so every label is empty."""
    if len(args) != 1:
        raise TemplateExecError(f"wrong number of args for Meta: want 1 got {len(args)}")
    return ""


def parse_record(text: str) -> dns.rrset.RRset:
    """One resource record in zone-file form, as miekg/dns's ``NewRR`` reads it: names
    relative to the root, TTL 3600 and class IN unless given (TTL and class in either
    order). Raises ``RecordError``."""
    try:
        tok = dns.tokenizer.Tokenizer(text)
        first = tok.get()
        if first.is_eol_or_eof():
            raise RecordError("no record")
        if first.value.startswith("$"):
            raise RecordError(f"{first.value} is not supported in a template")
        owner = dns.name.from_text(first.value, dns.name.root)
        ttl: int | None = None
        rdclass: dns.rdataclass.RdataClass | None = None
        while True:
            token = tok.get()
            if not token.is_identifier():
                raise RecordError("missing type")
            word = token.value
            if ttl is None and word[:1].isdigit():
                ttl = dns.ttl.from_text(word)
            elif rdclass is None and (
                word.upper() in _CLASS_NAMES or word.upper().startswith("CLASS")
            ):
                rdclass = dns.rdataclass.from_text(word)
            else:
                rdtype = dns.rdatatype.from_text(word)
                break
        if rdclass is None:
            rdclass = dns.rdataclass.IN
        rdata = dns.rdata.from_text(rdclass, rdtype, tok, dns.name.root, relativize=False)
    except RecordError:
        raise
    except (dns.exception.DNSException, ValueError) as exc:
        raise RecordError(str(exc) or type(exc).__name__) from None
    rrset = dns.rrset.RRset(owner, rdclass, rdtype)
    rrset.add(rdata, DEFAULT_TTL if ttl is None else ttl)
    return rrset
