"""What ``rewrite`` lines say, and what each rule does: pure, no I/O.

Each ``rewrite`` directive is one rule; ``parse_rewrite`` gives them in
Corefile order. A rule looks at the question as the rules before it left it
(``Question``) and, when it matches, changes it and gives the response rules
that its reply needs (``ResponseRule``s), as CoreDNS's ``Rule.Rewrite``. The
plugin applies the response rules to the reply in reverse rule order.
"""

from __future__ import annotations

import ipaddress
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import dns.edns
import dns.exception
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype

from pycorefile import Directive, Request, SetupError
from pycorefile.re2 import Re2Error, compile_re2

STOP, CONTINUE = "stop", "continue"
MATCH_KINDS = ("exact", "prefix", "suffix", "substring", "regex")

_CLASSES = {"IN": 1, "CS": 2, "CH": 3, "HS": 4, "NONE": 254, "ANY": 255}
"""miekg/dns's ``StringToClass``."""
_RCODES = {
    "NOERROR": 0, "FORMERR": 1, "SERVFAIL": 2, "NXDOMAIN": 3, "NOTIMP": 4, "REFUSED": 5,
    "YXDOMAIN": 6, "YXRRSET": 7, "NXRRSET": 8, "NOTAUTH": 9, "NOTZONE": 10, "BADSIG": 16,
    "BADVERS": 16, "BADKEY": 17, "BADTIME": 18, "BADMODE": 19, "BADNAME": 20, "BADALG": 21,
    "BADTRUNC": 22, "BADCOOKIE": 23,
}  # fmt: skip
"""miekg/dns's ``StringToRcode``."""


class RuleError(ValueError):
    """A rule's arguments are wrong; ``arg`` is the index of the one at fault, if known."""

    def __init__(self, message: str, arg: int | None = None) -> None:
        super().__init__(message)
        self.arg = arg


# -- The question as the rules see it ---------------------------------------------------------


@dataclass
class Question:
    """The query as rewritten so far: name (lowercased FQDN text), type, class, EDNS options.

    ``options`` is None until an edns0 rule touches them; then the list of the
    request's options (an OPT record is added if the request had none, as
    CoreDNS does).
    """

    request: Request
    name: str
    qtype: int
    qclass: int
    options: list[dns.edns.Option] | None = None

    def edns_options(self) -> list[dns.edns.Option]:
        if self.options is None:
            self.options = list(self.request.message.options)
        return self.options


# -- What a reply needs -----------------------------------------------------------------------


class ResponseRule:
    """Changes one record of the reply (CoreDNS's ``ResponseRule``); ``message_level`` rules
    (rcode) are also applied once to a reply without records."""

    message_level = False

    def owner(self, name: str) -> str:
        return name

    def value(self, name: str) -> str:
        return name

    def ttl(self, ttl: int) -> int:
        return ttl

    def rcode(self, rcode: int) -> int:
        return rcode


class StringRewriter(ABC):
    """Maps a name (FQDN text) to another, or leaves it."""

    @abstractmethod
    def rewrite(self, text: str) -> str:
        """``text`` rewritten, or ``text`` itself when the rewriter does not apply."""


@dataclass(frozen=True)
class RegexRewriter(StringRewriter):
    """``FROM`` searched; ``TO`` with ``{N}`` replaced by group N (literally)."""

    pattern: re.Pattern[str]
    replacement: str

    def rewrite(self, text: str) -> str:
        found = self.pattern.search(text)
        if found is None:
            return text
        return substitute(self.replacement, found)


@dataclass(frozen=True)
class RemapRewriter(StringRewriter):
    """The name ``orig``, or a name ending in ``.orig``, under ``replacement`` instead."""

    orig: str
    replacement: str

    def rewrite(self, text: str) -> str:
        if text == self.orig:
            return self.replacement
        cut = len(text) - len(self.orig)
        if cut > 0 and text[cut - 1] == "." and text[cut:] == self.orig:
            return text[:cut] + self.replacement
        return text


@dataclass(frozen=True)
class SuffixRewriter(StringRewriter):
    """A string ending in ``suffix`` ends in ``replacement`` instead."""

    suffix: str
    replacement: str

    def rewrite(self, text: str) -> str:
        if text.endswith(self.suffix):
            return text[: len(text) - len(self.suffix)] + self.replacement
        return text


@dataclass(frozen=True)
class OwnerRule(ResponseRule):
    rewriter: StringRewriter

    def owner(self, name: str) -> str:
        return self.rewriter.rewrite(name)


@dataclass(frozen=True)
class ValueRule(ResponseRule):
    rewriter: StringRewriter

    def value(self, name: str) -> str:
        return self.rewriter.rewrite(name)


@dataclass(frozen=True)
class TtlRule(ResponseRule):
    low: int
    high: int

    def ttl(self, ttl: int) -> int:
        if ttl < self.low:
            return self.low
        return min(ttl, self.high)


@dataclass(frozen=True)
class RcodeRule(ResponseRule):
    old: int
    new: int
    message_level = True

    def rcode(self, rcode: int) -> int:
        return self.new if rcode == self.old else rcode


@dataclass(frozen=True)
class CnameRule(ResponseRule):
    """Marks a reply whose CNAME target the rule may rewrite (and look up again)."""

    rule: CnameTargetRule


@dataclass(frozen=True)
class EdnsRevert(ResponseRule):
    """The reply's OPT loses option ``code`` (``old`` None) or gets ``old`` back for it."""

    code: int
    old: dns.edns.Option | None = None


# -- Rules --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule(ABC):
    mode: str

    @abstractmethod
    def rewrite(self, question: Question) -> list[ResponseRule] | None:
        """The response rules when the rule matched (and changed ``question``), else None."""


@dataclass(frozen=True)
class NameMatcher:
    """How ttl, rcode and name rules match the question name."""

    kind: str
    text: str = ""
    pattern: re.Pattern[str] | None = None

    def matches(self, name: str) -> bool:
        if self.kind == "exact":
            return name == self.text
        if self.kind == "prefix":
            return name.startswith(self.text)
        if self.kind == "suffix":
            return name.endswith(self.text)
        if self.kind == "substring":
            return self.text in name
        assert self.pattern is not None
        return self.pattern.search(name) is not None


@dataclass(frozen=True)
class NameRule(Rule):
    matcher: NameMatcher
    replacement: str
    auto: bool
    static: tuple[ResponseRule, ...]

    def rewrite(self, question: Question) -> list[ResponseRule] | None:
        name, matcher, to = question.name, self.matcher, self.replacement
        kind = matcher.kind
        if kind == "exact":
            if name != matcher.text:
                return None
            new = to
        elif kind == "prefix":
            if not name.startswith(matcher.text):
                return None
            new = to + name[len(matcher.text) :]
        elif kind == "suffix":
            if not name.endswith(matcher.text):
                return None
            new = name[: len(name) - len(matcher.text)] + to
        elif kind == "substring":
            if matcher.text not in name:
                return None
            new = name.replace(matcher.text, to)
        else:
            assert matcher.pattern is not None
            found = matcher.pattern.search(name)
            if found is None:
                return None
            new = substitute(to, found)
        question.name = new
        if not self.auto:
            return list(self.static)
        back = RemapRewriter(new, name)
        return [OwnerRule(back), ValueRule(back), *self.static]


@dataclass(frozen=True)
class TypeRule(Rule):
    old: int
    new: int

    def rewrite(self, question: Question) -> list[ResponseRule] | None:
        if question.qtype != self.old:
            return None
        question.qtype = self.new
        return []


@dataclass(frozen=True)
class ClassRule(Rule):
    old: int
    new: int

    def rewrite(self, question: Question) -> list[ResponseRule] | None:
        if question.qclass != self.old:
            return None
        question.qclass = self.new
        return []


@dataclass(frozen=True)
class MatchingRule(Rule):
    """ttl and rcode: a fixed response rule for the names that match."""

    matcher: NameMatcher
    response: ResponseRule

    def rewrite(self, question: Question) -> list[ResponseRule] | None:
        return [self.response] if self.matcher.matches(question.name) else None


@dataclass(frozen=True)
class CnameTargetRule(Rule):
    """``cname [KIND] FROM TO``: matches every query; its work is on the reply."""

    kind: str
    source: str
    target: str
    pattern: re.Pattern[str] | None = None

    def rewrite(self, question: Question) -> list[ResponseRule] | None:
        return [CnameRule(self)]

    def new_target(self, target: str) -> str | None:
        """The rewritten CNAME target (FQDN text as in the reply); None: no match."""
        kind, source, to = self.kind, self.source, self.target
        if kind == "exact":
            return to if target == source else None
        if kind == "prefix":
            return to + target[len(source) :] if target.startswith(source) else None
        if kind == "suffix":
            return target[: len(target) - len(source)] + to if target.endswith(source) else None
        if kind == "substring":
            return target.replace(source, to) if source in target else None
        assert self.pattern is not None
        found = self.pattern.search(target)
        return None if found is None else substitute(to, found)


EDNS_VARIABLES = (
    "{qname}", "{qtype}", "{client_ip}", "{client_port}", "{protocol}", "{server_ip}",
    "{server_port}",
)  # fmt: skip


@dataclass(frozen=True)
class Edns0Rule(Rule):
    """``edns0 local|nsid|subnet ACTION ...``: changes the request's OPT options."""

    option: str  # local, nsid, subnet
    action: str  # set, append, replace, unset
    code: int
    data: bytes = b""
    variable: str = ""
    v4_bits: int = 0
    v6_bits: int = 0
    revert: bool = False

    def rewrite(self, question: Question) -> list[ResponseRule] | None:
        options = question.edns_options()
        if self.action == "unset":
            options[:] = [o for o in options if o.otype != self.code]
            return []
        new = self._option(question.request)
        if new is None:
            return None
        for index, existing in enumerate(options):
            if existing.otype != self.code:
                continue
            if self.action in ("replace", "set"):
                options[index] = new
                return [EdnsRevert(self.code, existing)] if self.revert else []
            if self.variable or self.option == "subnet":
                return None  # present already: append adds nothing
            break  # a static local or nsid option is appended even when present (CoreDNS does)
        if self.action in ("append", "set"):
            options.append(new)
            return [EdnsRevert(self.code)] if self.revert else []
        return None

    def _option(self, request: Request) -> dns.edns.Option | None:
        if self.option == "nsid":
            return dns.edns.GenericOption(dns.edns.OptionType.NSID, b"")
        if self.option == "subnet":
            address = ipaddress.ip_address(request.client[0].split("%")[0])
            bits = self.v4_bits if address.version == 4 else self.v6_bits
            network = ipaddress.ip_network(f"{address}/{bits}", strict=False)
            return dns.edns.ECSOption(str(network.network_address), bits, 0)
        data = self.data
        if self.variable:
            value = edns_variable(self.variable, request)
            if value is None:
                return None
            data = value
        return dns.edns.GenericOption(dns.edns.OptionType.make(self.code), data)


def edns_variable(variable: str, request: Request) -> bytes | None:
    """The bytes of ``{qname}``, ``{client_ip}``... for this request (None: no value)."""
    if variable == "{qname}":
        return request.qname.to_text().encode()
    if variable == "{qtype}":
        return request.qtype.to_bytes(2, "big")
    if variable == "{client_ip}":
        return ipaddress.ip_address(request.client[0].split("%")[0]).packed
    if variable == "{client_port}":
        return request.client[1].to_bytes(2, "big")
    if variable == "{protocol}":
        return request.proto.encode()
    local = request.local
    if local is None:
        return None
    if variable == "{server_ip}":
        return ipaddress.ip_address(local[0].split("%")[0]).packed
    if variable == "{server_port}":
        return local[1].to_bytes(2, "big")
    return None  # metadata labels: pycorefile has no metadata plugin yet


def substitute(template: str, found: re.Match[str]) -> str:
    """``{0}``...``{N}`` in ``template`` replaced literally by the groups (Go: "" for none)."""
    out = template
    for index in range(len(found.groups()) + 1):
        out = out.replace("{" + str(index) + "}", found.group(index) or "")
    return out


# -- Parsing ------------------------------------------------------------------------------------


@dataclass
class _Args:
    """A rule's arguments and where each came from (for positions in errors)."""

    words: list[str]
    positions: list[int] = field(default_factory=list)


def parse_rewrite(directives: Sequence[Directive]) -> tuple[Rule, ...]:
    """Every ``rewrite`` line of a block, a rule each, in Corefile order."""
    rules: list[Rule] = []
    for directive in directives:
        words, where = _words(directive)
        try:
            rules.append(new_rule(words))
        except RuleError as exc:
            target, index = where(exc.arg)
            raise SetupError(str(exc), target, index) from None
    return tuple(rules)


def _words(
    directive: Directive,
) -> tuple[list[str], Callable[[int | None], tuple[Directive, int | None]]]:
    """The rule's words: the line's, or (with fewer than 2) the block's lines joined."""
    words = list(directive.args)
    origin: list[tuple[Directive, int]] = [(directive, i) for i in range(len(words))]
    if len(words) < 2 and directive.block:
        for line in directive.block:
            words.append(line.name)
            origin.append((line, -1))
            words.extend(line.args)
            origin.extend((line, i) for i in range(len(line.args)))

    def where(index: int | None) -> tuple[Directive, int | None]:
        if index is None or not 0 <= index < len(origin):
            return directive, None
        target, arg = origin[index]
        return target, (None if arg < 0 else arg)

    return words, where


def new_rule(args: list[str]) -> Rule:
    """CoreDNS's ``newRule``: ``[continue|stop] FIELD ARGS...``."""
    if not args:
        raise RuleError("no rule type specified for rewrite")
    first = args[0].lower()
    mode, start = STOP, 0
    if first in (STOP, CONTINUE):
        if len(args) < 2:
            raise RuleError(f"{first} rule must begin with a rule type", 0)
        mode, start = first, 1
    kind = args[start].lower()
    rest = args[start + 1 :]
    offset = start + 1

    def shifted(exc: RuleError) -> RuleError:
        return RuleError(str(exc), None if exc.arg is None else exc.arg + offset)

    try:
        if kind == "answer":
            raise RuleError("response rewrites must begin with a name rule", start - offset)
        if kind == "name":
            return _name_rule(mode, rest)
        if kind in ("type", "class"):
            if len(rest) != 2:
                raise RuleError(f"{kind} rules must have exactly two arguments")
            table = _CLASSES if kind == "class" else None
            values = [_code(kind, text, table, index) for index, text in enumerate(rest)]
            cls = ClassRule if kind == "class" else TypeRule
            return cls(mode, values[0], values[1])
        if kind == "edns0":
            return _edns0_rule(mode, rest)
        if kind == "ttl":
            return _ttl_rule(mode, rest)
        if kind == "rcode":
            return _rcode_rule(mode, rest)
        if kind == "cname":
            return _cname_rule(mode, rest)
    except RuleError as exc:
        raise shifted(exc) from None
    raise RuleError(f"invalid rule type {args[start]!r}", start)


def _code(kind: str, text: str, classes: dict[str, int] | None, index: int) -> int:
    upper = text.upper()
    if classes is not None:
        if upper not in classes:
            raise RuleError(f"invalid class {upper!r}", index)
        return classes[upper]
    try:
        value = dns.rdatatype.from_text(upper)
    except (dns.rdatatype.UnknownRdatatype, ValueError):
        value = None
    if value is None or upper.startswith("TYPE"):
        raise RuleError(f"invalid type {upper!r}", index)
    return int(value)


def normalize(text: str) -> str:
    """CoreDNS's ``plugin.Name(s).Normalize()``: lowercased, a final dot added."""
    lower = text.lower()
    return lower if lower.endswith(".") else lower + "."


def _regex(text: str, what: str, index: int) -> re.Pattern[str]:
    try:
        return compile_re2(text)
    except Re2Error as exc:
        raise RuleError(f"invalid regex pattern in {what}: {exc}", index) from None


def _check_groups(pattern: re.Pattern[str], replacement: str, index: int) -> None:
    used = sum(1 for n in range(101) if "{" + str(n) + "}" in replacement)
    if used > pattern.groups:
        raise RuleError(
            f"the rewrite regex pattern ({replacement}) uses more subexpressions than its "
            f"corresponding matching regex pattern ({pattern.pattern})",
            index,
        )


def _name_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 2:
        raise RuleError("too few arguments for a name rule")
    if len(args) == 2:
        kind, source, target, base = "exact", args[0], args[1], 0
    else:
        kind, source, target, base = args[0].lower(), args[1], args[2], 1
    if kind not in MATCH_KINDS:
        raise RuleError(
            "name rule supports only exact, prefix, suffix, substring, and regex name "
            f"matching, received: {kind}",
            0,
        )
    auto = False
    static: tuple[ResponseRule, ...] = ()
    if len(args) > 3:
        auto, static = _answer_rules(kind, args[3:], 3)
    replacement = normalize(target)
    if kind == "regex":
        pattern = _regex(source, "a name rule", base)
        _check_groups(pattern, target, base + 1)
        matcher = NameMatcher(kind, pattern=pattern)
    else:
        matcher = NameMatcher(kind, normalize(source))
    if kind == "exact":
        auto = True
    elif kind == "suffix" and auto:
        back = SuffixRewriter(replacement, matcher.text)
        static = (OwnerRule(back), ValueRule(back), *static)
        auto = False
    return NameRule(mode, matcher, replacement, auto, tuple(static))


def _answer_rules(kind: str, args: list[str], offset: int) -> tuple[bool, tuple[ResponseRule, ...]]:
    """``answer auto | answer name FROM TO | answer value FROM TO``, repeated (later
    ``answer`` keywords may be left out)."""
    if len(args) < 2:
        raise RuleError(f"invalid arguments for {kind} rule", offset)
    auto, rules, names = False, [], 0
    index, last = 0, ""
    while index < len(args):
        if not last and args[index] != "answer":
            raise RuleError(
                f"exceeded the number of arguments for a non-answer rule argument for {kind} rule",
                offset + index,
            )
        if args[index] == "answer":
            index += 1
        if index >= len(args):
            raise RuleError(f"type missing for answer rule for {kind} rule", offset + index - 1)
        last = args[index]
        index += 1
        if last == "auto":
            auto = True
            continue
        if last not in ("name", "value"):
            raise RuleError(
                f"invalid type {last!r} for answer rule for {kind} rule", offset + index - 1
            )
        if len(args) - index < 2:
            raise RuleError(
                f"{last} answer rule for {kind} rule: 2 arguments required", offset + index - 1
            )
        pattern = _regex(args[index], f"{last} answer rule for {kind} rule", offset + index)
        _check_groups(pattern, args[index + 1], offset + index + 1)
        rewriter = RegexRewriter(pattern, normalize(args[index + 1]))
        rules.append(OwnerRule(rewriter) if last == "name" else ValueRule(rewriter))
        names += last == "name"
        index += 2
    if auto and names:
        raise RuleError(
            "auto name answer rule cannot be combined with explicit name answer rules", offset
        )
    return auto, tuple(rules)


def _matcher(kind: str, text: str, what: str, index: int) -> NameMatcher:
    kind = kind.lower()
    if kind not in MATCH_KINDS:
        raise RuleError(
            f"{what} rule supports only exact, prefix, suffix, substring, and regex name matching",
            index - 1,
        )
    if kind == "regex":
        return NameMatcher(kind, pattern=_regex(text, f"a {what} rule", index))
    return NameMatcher(kind, normalize(text))


def _ttl_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 2:
        raise RuleError(f"too few ({len(args)}) arguments for a ttl rule")
    if len(args) > 3:
        raise RuleError("too many arguments for a ttl rule", 3)
    text = args[-1]
    bounds = _ttl_range(text)
    if bounds is None:
        raise RuleError(f"invalid TTL '{text}' for a ttl rule", len(args) - 1)
    if len(args) == 3:
        matcher = _matcher(args[0], args[1], "ttl", 1)
    else:
        matcher = NameMatcher("exact", normalize(args[0]))
    return MatchingRule(mode, matcher, TtlRule(*bounds))


def _ttl_range(text: str) -> tuple[int, int] | None:
    parts = text.split("-")

    def number(part: str) -> int | None:
        return int(part) if part.isdigit() and int(part) < 1 << 32 else None

    if len(parts) == 1:
        value = number(parts[0])
        return None if value is None else (value, value)
    if len(parts) != 2 or parts == ["", ""]:
        return None
    low = 0 if parts[0] == "" else number(parts[0])
    high = 2147483647 if parts[1] == "" else number(parts[1])
    if low is None or high is None or low > high:
        return None
    return low, high


def _rcode(text: str) -> int | None:
    if text.isdigit():
        return int(text) if int(text) <= 23 else None
    return _RCODES.get(text.upper())


def _rcode_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 3:
        raise RuleError(f"too few ({len(args)}) arguments for a rcode rule")
    if len(args) > 4:
        raise RuleError("too many arguments for a rcode rule", 4)
    old_text, new_text = args[-2], args[-1]
    old, new = _rcode(old_text), _rcode(new_text)
    if old is None:
        raise RuleError(f"invalid matching RCODE '{old_text}' for a rcode rule", len(args) - 2)
    if new is None:
        raise RuleError(f"invalid replacement RCODE '{new_text}' for a rcode rule", len(args) - 1)
    if len(args) == 4:
        matcher = _matcher(args[0], args[1], "rcode", 1)
    else:
        matcher = NameMatcher("exact", normalize(args[0]))
    return MatchingRule(mode, matcher, RcodeRule(old, new))


def _cname_rule(mode: str, args: list[str]) -> Rule:
    if len(args) == 3:
        kind = args[0].lower()
        if kind not in MATCH_KINDS:
            raise RuleError(f"unknown cname rewrite type: {kind}", 0)
        source, target, base = args[1].lower(), args[2].lower(), 1
    elif len(args) == 2:
        kind, source, target, base = "exact", args[0].lower(), args[1].lower(), 0
    else:
        raise RuleError(f"too few ({len(args)}) arguments for a cname rule")
    if kind == "exact":
        source, target = normalize(source), normalize(target)
    pattern = None
    if kind == "regex":
        # As CoreDNS: the pattern is lowercased before it is compiled (so \D reads as \d).
        pattern = _regex(source, "a cname rule", base)
    return CnameTargetRule(mode, kind, source, target, pattern)


def _edns0_rule(mode: str, args: list[str]) -> Rule:
    if len(args) < 2:
        raise RuleError("too few arguments for an EDNS0 rule")
    option, action = args[0].lower(), args[1].lower()
    if action not in ("set", "append", "replace", "unset"):
        raise RuleError(f"invalid action: {action!r}", 1)
    if option not in ("local", "nsid", "subnet"):
        raise RuleError(f"invalid rule type {option!r}", 0)
    if action == "unset":
        expected = 3 if option == "local" else 2
        if len(args) != expected:
            raise RuleError(f"{option} unset action requires exactly {expected - 1} argument(s)")
        code = _option_code(args[2], 2) if option == "local" else _OPTION_CODES[option]
        return Edns0Rule(mode, option, action, code)
    revert = args[-1] == "revert"
    if revert:
        args = args[:-1]
    if option == "nsid":
        if len(args) != 2:
            raise RuleError("EDNS0 NSID rules can accept no more than one arg", 2)
        return Edns0Rule(mode, option, action, _OPTION_CODES["nsid"], revert=revert)
    if len(args) != 4:
        raise RuleError(f"EDNS0 {option} rules require three or four args")
    if option == "subnet":
        v4, v6 = _mask(args[2], 32, 2), _mask(args[3], 128, 3)
        return Edns0Rule(
            mode, option, action, _OPTION_CODES["subnet"], v4_bits=v4, v6_bits=v6, revert=revert
        )
    code = _option_code(args[2], 2)
    data_text = args[3]
    if data_text.startswith("{") and data_text.endswith("}"):
        if data_text not in EDNS_VARIABLES:
            raise RuleError(
                f"unsupported variable name {data_text!r} (metadata labels need the metadata "
                "plugin, which pycorefile does not have yet)",
                3,
            )
        return Edns0Rule(mode, option, action, code, variable=data_text, revert=revert)
    if data_text.startswith("0x"):
        try:
            data = bytes.fromhex(data_text[2:])
        except ValueError:
            raise RuleError(f"encoding/hex: invalid byte in {data_text!r}", 3) from None
    else:
        data = data_text.encode()
    return Edns0Rule(mode, option, action, code, data=data, revert=revert)


_OPTION_CODES = {"nsid": 3, "subnet": 8}


def _option_code(text: str, index: int) -> int:
    """A Go ``ParseUint(s, 0, 16)``: decimal, 0x, 0o, 0b, or a leading 0 for octal."""
    try:
        value = int(text, 0)
    except ValueError:
        try:
            value = int(text, 8) if text.startswith("0") else -1
        except ValueError:
            value = -1
    if not 0 <= value <= 0xFFFF:
        raise RuleError(f'strconv.ParseUint: parsing "{text}": invalid syntax', index)
    return value


def _mask(text: str, most: int, index: int) -> int:
    if not text.isdigit() or int(text) > most:
        family = "IPv4" if most == 32 else "IPv6"
        raise RuleError(f"invalid {family} bit mask length {text}", index)
    return int(text)
