"""Log formats: CoreDNS's replacer placeholders compiled once into a template.

A format such as ``{remote}:{port} - {>id} "{type} ..."`` is split at setup
into literal text and placeholders, and compiled into one function that fills
a ``%``-template, so logging a query costs one call and one string formatting:
no parsing per query, no function call per field, no logging-module objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dns.rdataclass
import dns.rdatatype

from pycorefile import Request
from pycorefile.response import reply_class, typify

COMMON_FORMAT = (
    '{remote}:{port} - {>id} "{type} {class} {name} {proto} {size} {>do} {>bufsize}" '
    "{rcode} {>rflags} {rsize} {duration}"
)
COMBINED_FORMAT = COMMON_FORMAT + ' "{>opcode}"'
JSON_FORMAT = "{json}"
"""Our opt-in extension: the whole format ``{json}`` logs one JSON object per query."""
EMPTY = "-"
INFO_PREFIX = "[INFO] "

# -- Field values --------------------------------------------------------------------
#
# Each placeholder is a Python expression over ``r`` (the Request), ``c``
# (``r.client``), ``w`` (the reply as sent) and ``d`` (seconds taken). A
# format is compiled into one function evaluating them, so a log line costs
# one call and one ``%`` formatting, not a call per field.

_TYPE_TEXT: dict[int, str] = {}
_CLASS_TEXT: dict[int, str] = {}
_NAME_TEXT: dict[bytes, str] = {}
_NAME_CACHE_MAX = 10000
_FLAG_TEXT: dict[int, str] = {}
_FLAG_BITS = (
    (0x8000, "qr"),
    (0x0400, "aa"),
    (0x0200, "tc"),
    (0x0100, "rd"),
    (0x0080, "ra"),
    (0x0040, "z"),
    (0x0020, "ad"),
    (0x0010, "cd"),
)
_FLAG_MASK = 0x87F0
_RCODE_TEXT = (
    "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED", "YXDOMAIN",
    "YXRRSET", "NXRRSET", "NOTAUTH", "NOTZONE", "11", "12", "13", "14", "15",
)  # fmt: skip
"""Header rcodes as CoreDNS prints them: the name, or the number when it has none."""


def type_text(qtype: int) -> str:
    text = _TYPE_TEXT.get(qtype)
    if text is None:
        text = _TYPE_TEXT[qtype] = dns.rdatatype.to_text(dns.rdatatype.RdataType.make(qtype))
    return text


def class_text(qclass: int) -> str:
    text = _CLASS_TEXT.get(qclass)
    if text is None:
        text = _CLASS_TEXT[qclass] = dns.rdataclass.to_text(dns.rdataclass.RdataClass.make(qclass))
    return text


def name_text(r: Request) -> str:
    """The lowercased question name; names repeat, so their text is remembered."""
    key = r.key[: r.name_end - 12]
    text = _NAME_TEXT.get(key)
    if text is None:
        if len(_NAME_TEXT) >= _NAME_CACHE_MAX:
            _NAME_TEXT.clear()
        text = _NAME_TEXT[key] = r.name
    return text


def flags_text(w: bytes) -> str:
    """Set header flags in CoreDNS's order ``qr,aa,tc,rd,ra,z,ad,cd``."""
    if len(w) < 4:
        return EMPTY
    bits = ((w[2] << 8) | w[3]) & _FLAG_MASK
    text = _FLAG_TEXT.get(bits)
    if text is None:
        text = _FLAG_TEXT[bits] = ",".join(name for bit, name in _FLAG_BITS if bits & bit)
    return text


def bracketed(ip: str) -> str:
    """An address as CoreDNS writes it: IPv6 in brackets."""
    return f"[{ip}]" if ":" in ip else ip


def go_seconds(seconds: float) -> str:
    """Seconds as Go's ``FormatFloat(secs, 'f', -1, 64)`` prints a nanosecond duration."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".")


LABELS: dict[str, str] = {
    "{type}": "(_TYPE_TEXT.get(r.qtype) or type_text(r.qtype))",
    "{name}": "(_NAME_TEXT.get(r.key[: r.name_end - 12]) or name_text(r))",
    "{class}": "(_CLASS_TEXT.get(r.qclass) or class_text(r.qclass))",
    "{proto}": "r.proto",
    "{size}": "len(r.wire)",
    "{remote}": "('[' + c[0] + ']' if ':' in c[0] else c[0])",
    "{port}": "c[1]",
    "{local}": "('-' if r.local is None else bracketed(r.local[0]))",
    "{>id}": "r.id",
    "{>opcode}": "r.opcode",
    "{>do}": "('true' if r.do else 'false')",
    # CoreDNS's state.Size(): TCP 65535; UDP the EDNS size raised to 512, or 512.
    "{>bufsize}": "(65535 if r.proto != 'udp' else r.edns_payload if r.edns else 512)",
    # A dropped query (the acl plugin's drop) has an empty reply: "-" as CoreDNS.
    "{rcode}": "(_RCODE_TEXT[w[3] & 15] if w else '-')",
    "{rsize}": "len(w)",
    "{duration}": "f'{d:.9f}'.rstrip('0').rstrip('.') + 's'",  # go_seconds, inlined
    "{>rflags}": "((_FLAG_TEXT.get(((w[2] << 8) | w[3]) & 0x87F0) or flags_text(w)) if w else '-')",
}
"""Every placeholder of CoreDNS's replacer, with the expression giving its value."""

METADATA: dict[str, str] = {
    "log/type": "typify(w)",
    "log/class": "reply_class(typify(w))",
}
"""``{/label}`` values we can give without a metadata plugin; any other is ``-``."""

_NAMESPACE = {
    "_TYPE_TEXT": _TYPE_TEXT,
    "_CLASS_TEXT": _CLASS_TEXT,
    "_NAME_TEXT": _NAME_TEXT,
    "_FLAG_TEXT": _FLAG_TEXT,
    "_RCODE_TEXT": _RCODE_TEXT,
    "type_text": type_text,
    "class_text": class_text,
    "name_text": name_text,
    "flags_text": flags_text,
    "bracketed": bracketed,
    "go_seconds": go_seconds,
    "typify": typify,
    "reply_class": reply_class,
    "json_string": json.dumps,
}


# -- Parsing and compiling ---------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    """A piece of a format: literal text, a placeholder, or a metadata label."""

    kind: str
    """``literal``, ``label`` or ``metadata``."""
    value: str


def expand_format(text: str) -> str:
    """Expand ``{common}`` and ``{combined}`` inside a user's format, as CoreDNS does."""
    return text.replace("{common}", COMMON_FORMAT).replace("{combined}", COMBINED_FORMAT)


def parse_format(text: str) -> list[Node]:
    """Split a format the way CoreDNS's replacer does.

    Each ``}`` is paired with the nearest ``{`` before it, so ``{{remote}}``
    is ``{`` + the address + ``}``; an unknown ``{...}`` stays literal text.
    """
    nodes: list[Node] = []

    def literal(value: str) -> None:
        if not value:
            return
        if nodes and nodes[-1].kind == "literal":
            nodes[-1] = Node("literal", nodes[-1].value + value)
        else:
            nodes.append(Node("literal", value))

    rest = text
    while True:
        close = rest.find("}")
        if close < 0:
            break
        open_ = rest.rfind("{", 0, close)
        if open_ < 0:
            literal(rest[: close + 1])
            rest = rest[close + 1 :]
            continue
        placeholder = rest[open_ : close + 1]
        if placeholder in LABELS:
            literal(rest[:open_])
            nodes.append(Node("label", placeholder))
        elif placeholder.startswith("{/"):
            literal(rest[:open_])
            nodes.append(Node("metadata", placeholder[2:-1]))
        else:
            literal(rest[: close + 1])
        rest = rest[close + 1 :]
    literal(rest)
    return nodes


Render = Callable[[Request, bytes, float], str]
"""One log line from the request, the reply as sent, and the seconds taken."""


@dataclass(frozen=True)
class Template:
    """A compiled format: ``render(request, wire, seconds)`` gives one log line."""

    pattern: str
    fields: tuple[str, ...]
    """The expression of each ``%s`` in ``pattern``."""
    render: Render


def _build(pattern: str, fields: list[str]) -> Template:
    """Turn a %-pattern and its field expressions into one render function.

    The generated source holds only the fixed expressions above; the user's
    literal text is in ``pattern``, passed in as a value, never as code.
    """
    values = "".join(f"{expr}, " for expr in fields)
    source = f"def render(r, w, d):\n    c = r.client\n    return PATTERN % ({values})\n"
    namespace: dict[str, Any] = {**_NAMESPACE, "PATTERN": pattern}
    exec(compile(source, "<log format>", "exec"), namespace)
    return Template(pattern, tuple(fields), namespace["render"])


def compile_format(text: str, prefix: str = INFO_PREFIX) -> Template:
    """Compile an (expanded) format; ``{json}`` alone selects the JSON line."""
    if text == JSON_FORMAT:
        return _compile_json()
    parts = [prefix.replace("%", "%%")]
    fields: list[str] = []
    for node in parse_format(text):
        if node.kind == "literal":
            parts.append(node.value.replace("%", "%%"))
            continue
        if node.kind == "label":
            fields.append(LABELS[node.value])
        else:
            fields.append(METADATA.get(node.value, repr(EMPTY)))
        parts.append("%s")
    return _build("".join(parts), fields)


_JSON_FIELDS: tuple[tuple[str, str, bool], ...] = (
    # (key, expression, quoted); every unquoted value is a JSON number or boolean,
    # and no quoted value can hold a quote or a backslash (the name is encoded).
    ("remote", "c[0]", True),
    ("port", LABELS["{port}"], False),
    ("local", "('' if r.local is None else r.local[0])", True),
    ("id", LABELS["{>id}"], False),
    ("opcode", LABELS["{>opcode}"], False),
    ("type", LABELS["{type}"], True),
    ("class", LABELS["{class}"], True),
    ("name", f"json_string({LABELS['{name}']})", False),
    ("proto", LABELS["{proto}"], True),
    ("size", LABELS["{size}"], False),
    ("do", LABELS["{>do}"], False),
    ("bufsize", LABELS["{>bufsize}"], False),
    ("rcode", LABELS["{rcode}"], True),
    ("rflags", LABELS["{>rflags}"], True),
    ("rsize", LABELS["{rsize}"], False),
    ("duration", "go_seconds(d)", False),
)


def _compile_json() -> Template:
    keys = [f'"{key}":"%s"' if quoted else f'"{key}":%s' for key, _e, quoted in _JSON_FIELDS]
    return _build("{" + ",".join(keys) + "}", [expr for _k, expr, _q in _JSON_FIELDS])
