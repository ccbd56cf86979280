"""What ``template`` lines say: pure parsing, no I/O.

Each ``template CLASS TYPE [ZONE...] { ... }`` directive is one ``Template``;
all of a block's templates form one plugin, tried in Corefile order. Every
regex is translated from Go's syntax (``pycorefile.re2``) and every record
template parsed (``_gotemplate``) here, so what cannot be served is refused
at setup with its position.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import dns.rcode
import dns.rdataclass
import dns.rdatatype

from pycorefile import Directive, Fallthrough, SetupContext, SetupError, parse_zones
from pycorefile.re2 import Re2Error, compile_re2

from ._gotemplate import GoTemplate, Schema, TemplateSyntaxError

SECTIONS = ("answer", "additional", "authority")

QUESTION_SCHEMA: Schema = {"Name": None, "Qtype": None, "Qclass": None}
MESSAGE_SCHEMA: Schema = {
    "Id": None,
    "Response": None,
    "Opcode": None,
    "Authoritative": None,
    "Truncated": None,
    "RecursionDesired": None,
    "RecursionAvailable": None,
    "Zero": None,
    "AuthenticatedData": None,
    "CheckingDisabled": None,
    "Rcode": None,
    "Question": None,
}
DATA_SCHEMA: Schema = {
    "Zone": None,
    "Name": None,
    "Regex": None,
    "Match": None,
    "Group": None,
    "Class": None,
    "Type": None,
    "Message": MESSAGE_SCHEMA,
    "Question": QUESTION_SCHEMA,
    "Remote": None,
    "Var": None,
    "Meta": None,
}
"""The data a record template sees (CoreDNS's ``templateData``), for the setup check."""

_CLASSES = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
"""miekg/dns's ``StringToClass``: upper-case names only."""

_RCODES = [
    "NOERROR",
    "FORMERR",
    "SERVFAIL",
    "NXDOMAIN",
    "NOTIMP",
    "REFUSED",
    "YXDOMAIN",
    "YXRRSET",
    "NXRRSET",
    "NOTAUTH",
    "NOTZONE",
    "BADSIG",
    "BADVERS",
    "BADKEY",
    "BADTIME",
    "BADMODE",
    "BADNAME",
    "BADALG",
    "BADTRUNC",
    "BADCOOKIE",
]
"""miekg/dns's ``StringToRcode`` names (upper case)."""


@dataclass(frozen=True)
class RecordTemplate:
    """One record template of a section: its text (the metrics' ``template`` label) and
    the parsed template."""

    section: str
    text: str
    template: GoTemplate


@dataclass(frozen=True)
class Template:
    """One ``template`` directive."""

    qclass: int
    qtype: int
    zones: tuple[str, ...]
    regexes: tuple[re.Pattern[str], ...]
    records: tuple[RecordTemplate, ...]
    """Answer, additional and authority templates, each section in Corefile order."""
    rcode: int = dns.rcode.NOERROR
    ederror: tuple[int, str] | None = None
    fallthrough: Fallthrough | None = None

    @property
    def class_text(self) -> str:
        return dns.rdataclass.to_text(dns.rdataclass.RdataClass.make(self.qclass))

    @property
    def type_text(self) -> str:
        return dns.rdatatype.to_text(dns.rdatatype.RdataType.make(self.qtype))


@dataclass(frozen=True)
class TemplateConfig:
    templates: tuple[Template, ...]

    @property
    def zones(self) -> tuple[str, ...]:
        seen: dict[str, None] = {}
        for template in self.templates:
            for zone in template.zones:
                seen.setdefault(zone, None)
        return tuple(seen)


def parse_template(directives: Sequence[Directive], ctx: SetupContext) -> TemplateConfig:
    return TemplateConfig(tuple(_one(directive, ctx) for directive in directives))


def _one(directive: Directive, ctx: SetupContext) -> Template:
    args = directive.args
    if len(args) < 2:
        raise SetupError(
            f"Wrong argument count or unexpected line ending after '{directive.name}'", directive
        )
    qclass = _CLASSES.get(args[0])
    if qclass is None:
        raise SetupError(f"invalid query class {args[0]}", directive, 0)
    qtype = _rdtype(directive, 1)
    zones = tuple(parse_zones(args[2:], ctx, directive, 2))
    regexes: list[re.Pattern[str]] = []
    records: dict[str, list[RecordTemplate]] = {section: [] for section in SECTIONS}
    rcode = dns.rcode.NOERROR
    ederror: tuple[int, str] | None = None
    fallthrough: Fallthrough | None = None
    for option in directive.block or ():
        name, option_args = option.name, option.args
        if name == "match":
            _need(option, 1)
            for index, pattern in enumerate(option_args):
                try:
                    regexes.append(compile_re2(pattern))
                except Re2Error as exc:
                    raise SetupError(f"could not parse regex: {exc}", option, index) from None
        elif name in SECTIONS:
            _need(option, 1)
            for index, text in enumerate(option_args):
                try:
                    parsed = GoTemplate(text, DATA_SCHEMA)
                except TemplateSyntaxError as exc:
                    raise SetupError(f"could not compile template: {exc}", option, index) from None
                records[name].append(RecordTemplate(name, text, parsed))
        elif name == "rcode":
            _need(option, 1, 1)
            if option_args[0] not in _RCODES:
                raise SetupError(f"unknown rcode {option_args[0]}", option, 0)
            rcode = dns.rcode.from_text(option_args[0])
        elif name == "ederror":
            _need(option, 1, 2)
            code = option_args[0]
            if not code.isdigit() or int(code) > 65535:
                raise SetupError(f"error parsing extended DNS error code {code}", option, 0)
            ederror = (int(code), option_args[1] if len(option_args) > 1 else "")
        elif name == "fallthrough":
            fallthrough = Fallthrough.parse(option)
        elif name == "upstream":
            pass  # accepted and ignored, as CoreDNS (CNAME targets are always looked up)
        elif name in ("var", "expr"):
            raise SetupError(
                f"'{name}' is not supported yet (it needs view's expression language in the core)",
                option,
            )
        else:
            raise SetupError(
                f"Wrong argument count or unexpected line ending after '{name}'", option
            )
    return Template(
        qclass=qclass,
        qtype=qtype,
        zones=zones,
        regexes=tuple(regexes) or (compile_re2(".*"),),
        records=tuple(records["answer"] + records["additional"] + records["authority"]),
        rcode=rcode,
        ederror=ederror,
        fallthrough=fallthrough,
    )


def _rdtype(directive: Directive, index: int) -> int:
    """miekg/dns's ``StringToType``: upper-case mnemonics (ANY too), no ``TYPEnnn``."""
    text = directive.args[index]
    try:
        value = dns.rdatatype.from_text(text)
    except (dns.rdatatype.UnknownRdatatype, ValueError):
        value = None
    if value is None or text != text.upper() or text.startswith("TYPE"):
        raise SetupError(f"invalid RR type {text}", directive, index)
    return int(value)


def _need(option: Directive, minimum: int, maximum: int | None = None) -> None:
    count = len(option.args)
    if count < minimum or (maximum is not None and count > maximum):
        raise SetupError(
            f"Wrong argument count or unexpected line ending after '{option.name}'",
            option,
            maximum if maximum is not None and count > maximum else None,
        )
