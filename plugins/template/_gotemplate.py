"""A small interpreter of Go ``text/template``: the subset CoreDNS's template plugin uses.

``GoTemplate(text)`` parses a template once, at setup, and raises
``TemplateSyntaxError`` for anything outside the supported subset, so a
template that loads never fails for a reason of syntax. ``render(data)`` runs
it on one query's data; ``TemplateExecError`` is what Go's ``Execute`` would
return at that point (an index out of range, ``parseInt`` of a bad number, a
field of nothing), which the plugin counts as a template failure.

Supported (as Go's text/template):

- text and actions ``{{ ... }}``, trim markers ``{{-`` / ``-}}``, comments
  ``{{/* ... */}}``;
- pipelines ``A | B | C`` (the value of each is the last argument of the next);
- arguments: ``.`` and field chains (``.Name``, ``.Group.a``, ``.Question.Qtype``),
  variables ``$`` and ``$x`` (with field chains), parenthesised pipelines (with
  field chains), string literals (``"..."`` with Go escapes, raw
  ``` `...` ```), integers (decimal, ``0x``, ``0o``, ``0b``, ``_``), ``true``,
  ``false``, ``nil``;
- ``$x := pipeline`` and ``$x = pipeline``;
- ``if`` / ``else if`` / ``else`` / ``end``, ``with`` / ``else`` / ``end``,
  ``range`` (over a list or map, with ``$v :=`` or ``$i, $v :=``) / ``else``
  / ``end``;
- functions: ``and or not len index slice print printf println eq ne lt le gt
  ge`` and CoreDNS's ``parseInt``; the method ``.Meta "name"``; ``printf``
  verbs ``%s %v %d %x %X %o %q %c %t %%`` with flags and width.

Refused at setup: ``define``, ``template``, ``block``, ``break``,
``continue``, ``html``, ``js``, ``urlquery``, ``call``, floating-point, complex
and character constants, unknown functions and undefined variables (as Go),
and fields the data does not have (``.Nmae``: Go would fail at query time).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias

__all__ = ["NO_VALUE", "GoStruct", "GoTemplate", "TemplateExecError", "TemplateSyntaxError"]


class TemplateSyntaxError(ValueError):
    """The template is not valid Go, or uses what this interpreter does not support."""


class TemplateExecError(Exception):
    """Executing the template failed for this query (Go's ``Execute`` error)."""


class _NoValue:
    """What a missing map key gives (Go prints ``<no value>``)."""

    def __repr__(self) -> str:
        return "<no value>"


NO_VALUE = _NoValue()


@dataclass(frozen=True)
class GoStruct:
    """A Go struct value: its type name (for errors) and its fields; ``methods`` take arguments."""

    type_name: str
    fields: Mapping[str, Any]
    methods: Mapping[str, Callable[..., Any]] = field(default_factory=dict)


Schema: TypeAlias = "Mapping[str, Any] | None"
"""The fields a struct has, for the setup check: name -> nested schema (None: not a struct)."""

# -- Lexing ----------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<raw>`[^`]*`)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<char>'(?:[^'\\\n]|\\.)*')
  | (?P<declare>:=)
  | (?P<assign>=)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+)
  | (?P<dot>\.)
  | (?P<var>\$[A-Za-z0-9_]*)
  | (?P<number>[-+]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)
                 (?:\.[0-9]*)?(?:[eEpP][-+]?[0-9]+)?i?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<open>\()
  | (?P<close>\))
  | (?P<pipe>\|)
  | (?P<comma>,)
    """,
    re.VERBOSE,
)
_FIELD_AFTER = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+")


@dataclass
class _Token:
    kind: str
    text: str


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise TemplateSyntaxError(f"unexpected {text[pos]!r} in command")
        kind = match.lastgroup or ""
        pos = match.end()
        if kind == "space":
            continue
        token = _Token(kind, match.group())
        # A field chain right after a variable or a closing parenthesis belongs to it.
        if kind in ("var", "close"):
            chain = _FIELD_AFTER.match(text, pos)
            if chain is not None:
                out.append(token)
                token = _Token("chain", chain.group())
                pos = chain.end()
        out.append(token)
    return out


def _split_actions(text: str) -> Iterator[tuple[str, str]]:
    """("text", ...) and ("action", ...) pieces, trim markers applied, comments dropped."""
    pos = 0
    pending_trim = False
    while True:
        start = text.find("{{", pos)
        chunk = text[pos:] if start < 0 else text[pos:start]
        if pending_trim:
            chunk = chunk.lstrip(" \t\r\n")
        if start < 0:
            if chunk:
                yield "text", chunk
            return
        inner_start = start + 2
        trim_left = text.startswith("- ", inner_start) or text.startswith("-\t", inner_start)
        if trim_left:
            chunk = chunk.rstrip(" \t\r\n")
            inner_start += 1
        if chunk:
            yield "text", chunk
        body_start = inner_start
        stripped = text[body_start:].lstrip(" \t\r\n")
        if stripped.startswith("/*"):
            close = text.find("*/", body_start)
            if close < 0:
                raise TemplateSyntaxError("unclosed comment")
            end = text.find("}}", close)
        else:
            end = _action_end(text, body_start)
        if end < 0:
            raise TemplateSyntaxError("unclosed action")
        body = text[body_start:end]
        pending_trim = body.endswith((" -", "\t-", "\n-"))
        if pending_trim:
            body = body[:-1]
        pos = end + 2
        if not stripped.startswith("/*"):
            yield "action", body


def _action_end(text: str, pos: int) -> int:
    """The ``}}`` closing the action at ``pos``, skipping quoted text."""
    while pos < len(text):
        char = text[pos]
        if text.startswith("}}", pos):
            return pos
        if char in "\"'`":
            close = char
            pos += 1
            while pos < len(text) and text[pos] != close:
                if text[pos] == "\\" and close != "`":
                    pos += 1
                pos += 1
        pos += 1
    return -1


# -- The parse tree -----------------------------------------------------------------------


@dataclass
class _Field:
    base: Any  # None: the dot; str: a variable; _Pipe: a parenthesised pipeline
    chain: tuple[str, ...]


@dataclass
class _Literal:
    value: Any


@dataclass
class _Func:
    name: str


_Arg: TypeAlias = "_Field | _Literal | _Func"


@dataclass
class _Pipe:
    commands: list[list[_Arg]]
    declare: list[str] = field(default_factory=list)
    assign: bool = False


@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    pipe: _Pipe


@dataclass
class _Control:
    keyword: str  # if, with, range
    pipe: _Pipe
    body: list[_Node]
    otherwise: list[_Node]


_Node: TypeAlias = "_Text | _Action | _Control"

_FUNCS = frozenset(
    [
        "and",
        "or",
        "not",
        "len",
        "index",
        "slice",
        "print",
        "printf",
        "println",
        "eq",
        "ne",
        "lt",
        "le",
        "gt",
        "ge",
        "parseInt",
    ]
)
_REFUSED_FUNCS = frozenset(("html", "js", "urlquery", "call"))
_REFUSED_KEYWORDS = frozenset(("define", "template", "block", "break", "continue"))


class _Parser:
    def __init__(self, text: str, schema: Schema) -> None:
        self.pieces = list(_split_actions(text))
        self.pos = 0
        self.schema = schema
        self.scopes: list[set[str]] = [{"$"}]
        self.dot_moved = 0
        """Above 0 inside with and range, where the dot is no longer the data."""

    def parse(self) -> list[_Node]:
        nodes, stop = self.nodes(())
        if stop is not None:
            raise TemplateSyntaxError(f"unexpected {{{{{stop}}}}}")
        return nodes

    def nodes(self, stops: tuple[str, ...]) -> tuple[list[_Node], str | None]:
        out: list[_Node] = []
        while self.pos < len(self.pieces):
            kind, body = self.pieces[self.pos]
            self.pos += 1
            if kind == "text":
                out.append(_Text(body))
                continue
            tokens = _tokens(body)
            if not tokens:
                raise TemplateSyntaxError("missing value for command")
            head = tokens[0]
            if head.kind == "ident" and head.text in ("end", "else"):
                if head.text not in stops:
                    raise TemplateSyntaxError(f"unexpected {{{{{head.text}}}}}")
                if head.text == "end" and len(tokens) > 1:
                    raise TemplateSyntaxError("unexpected token after end")
                return out, body.strip()
            if head.kind == "ident" and head.text in ("if", "with", "range"):
                out.append(self.control(head.text, tokens[1:]))
            elif head.kind == "ident" and head.text in _REFUSED_KEYWORDS:
                raise TemplateSyntaxError(f"{{{{{head.text}}}}} is not supported")
            else:
                out.append(_Action(self.pipeline(tokens, allow_declare=True)))
        return out, None

    def control(self, keyword: str, tokens: list[_Token]) -> _Control:
        self.scopes.append(set())
        pipe = self.pipeline(tokens, allow_declare=True, in_range=keyword == "range")
        moves_dot = keyword in ("with", "range")
        self.dot_moved += moves_dot
        body, stop = self.nodes(("end", "else"))
        self.dot_moved -= moves_dot
        self.scopes.pop()
        otherwise: list[_Node] = []
        if stop is None:
            raise TemplateSyntaxError(f"unexpected EOF: {{{{{keyword}}}}} without {{{{end}}}}")
        if stop.startswith("else"):
            rest = stop[4:].strip()
            if rest.startswith(("if ", "with ")) and keyword in ("if", "with"):
                # else if / else with: a nested control that shares our end.
                inner_keyword, _sep, inner = rest.partition(" ")
                self.scopes.append(set())
                otherwise = [self.control(inner_keyword, _tokens(inner))]
                self.scopes.pop()
                return _Control(keyword, pipe, body, otherwise)
            if rest:
                raise TemplateSyntaxError(f"unexpected {rest!r} after else")
            self.scopes.append(set())
            otherwise, stop = self.nodes(("end",))
            self.scopes.pop()
            if stop is None:
                raise TemplateSyntaxError(f"unexpected EOF: {{{{{keyword}}}}} without {{{{end}}}}")
        return _Control(keyword, pipe, body, otherwise)

    def pipeline(
        self, tokens: list[_Token], allow_declare: bool = False, in_range: bool = False
    ) -> _Pipe:
        declare: list[str] = []
        assign = False
        if allow_declare:
            names: list[str] = []
            index = 0
            while index < len(tokens) and tokens[index].kind == "var":
                names.append(tokens[index].text)
                index += 1
                if index < len(tokens) and tokens[index].kind == "comma" and in_range:
                    index += 1
                    continue
                break
            if names and index < len(tokens) and tokens[index].kind in ("declare", "assign"):
                if len(names) > (2 if in_range else 1):
                    raise TemplateSyntaxError("too many declarations")
                assign = tokens[index].kind == "assign"
                if assign:
                    for name in names:
                        self.check_var(name)
                tokens = tokens[index + 1 :]
                declare = names
        commands: list[list[_Arg]] = [[]]
        index = 0
        while index < len(tokens):
            token = tokens[index]
            if token.kind == "pipe":
                if not commands[-1]:
                    raise TemplateSyntaxError("missing command before |")
                commands.append([])
                index += 1
                continue
            if token.kind == "open":
                depth, end = 1, index + 1
                while end < len(tokens) and depth:
                    depth += {"open": 1, "close": -1}.get(tokens[end].kind, 0)
                    end += 1
                if depth:
                    raise TemplateSyntaxError("unclosed left paren")
                inner = self.pipeline(tokens[index + 1 : end - 1])
                chain: tuple[str, ...] = ()
                if end < len(tokens) and tokens[end].kind == "chain":
                    chain = tuple(tokens[end].text[1:].split("."))
                    end += 1
                commands[-1].append(_Field(inner, chain))
                index = end
                continue
            commands[-1].append(self.argument(token, tokens, index))
            index += 2 if index + 1 < len(tokens) and tokens[index + 1].kind == "chain" else 1
        if not commands[-1]:
            raise TemplateSyntaxError("missing value for command")
        for command in commands:
            self.check_command(command)
        for name in declare:
            if not assign:
                self.scopes[-1].add(name)
        return _Pipe(commands, declare, assign)

    def argument(self, token: _Token, tokens: list[_Token], index: int) -> _Arg:
        kind, text = token.kind, token.text
        if kind == "field":
            chain = tuple(text[1:].split("."))
            self.check_fields(chain)
            return _Field(None, chain)
        if kind == "dot":
            return _Field(None, ())
        if kind == "var":
            self.check_var(text)
            after = tokens[index + 1] if index + 1 < len(tokens) else None
            chain = tuple(after.text[1:].split(".")) if after and after.kind == "chain" else ()
            return _Field(text, chain)
        if kind == "string":
            return _Literal(_go_unquote(text))
        if kind == "raw":
            return _Literal(text[1:-1])
        if kind == "number":
            return _Literal(_go_int(text))
        if kind == "char":
            raise TemplateSyntaxError(f"character constant {text} is not supported")
        if kind == "ident":
            if text in ("true", "false"):
                return _Literal(text == "true")
            if text == "nil":
                return _Literal(None)
            if text in _REFUSED_FUNCS:
                raise TemplateSyntaxError(f"function {text!r} is not supported")
            if text in _FUNCS:
                return _Func(text)
            raise TemplateSyntaxError(f'function "{text}" not defined')
        raise TemplateSyntaxError(f"unexpected {text!r} in command")

    def check_var(self, name: str) -> None:
        if not any(name in scope for scope in self.scopes):
            raise TemplateSyntaxError(f'undefined variable "{name}"')

    def check_fields(self, chain: tuple[str, ...]) -> None:
        """Fields of the data (while the dot is the data: outside with and range)."""
        if self.dot_moved or self.schema is None:
            return
        schema: Schema = self.schema
        for name in chain:
            if schema is None:
                return
            if name not in schema:
                raise TemplateSyntaxError(
                    f"can't evaluate field {name}: the data has no such field"
                )
            schema = schema[name]

    @staticmethod
    def check_command(command: list[_Arg]) -> None:
        head = command[0]
        if isinstance(head, _Func):
            return
        if len(command) > 1 and not (isinstance(head, _Field) and head.chain):
            raise TemplateSyntaxError("can't give argument to non-function")
        for arg in command[1:]:
            if isinstance(arg, _Func) and arg.name not in ("nil",):
                raise TemplateSyntaxError(f"function {arg.name!r} used as an argument")


_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _go_unquote(text: str) -> str:
    body = text[1:-1]
    out: list[str] = []
    pos = 0
    while pos < len(body):
        char = body[pos]
        if char != "\\":
            out.append(char)
            pos += 1
            continue
        code = body[pos + 1]
        if code in _ESCAPES:
            out.append(_ESCAPES[code])
            pos += 2
        elif code in "\\\"'":
            out.append(code)
            pos += 2
        elif code in "xuU":
            size = {"x": 2, "u": 4, "U": 8}[code]
            digits = body[pos + 2 : pos + 2 + size]
            if not re.fullmatch(f"[0-9a-fA-F]{{{size}}}", digits):
                raise TemplateSyntaxError(f"invalid syntax: {text}")
            out.append(chr(int(digits, 16)))
            pos += 2 + size
        elif code in "01234567":
            digits = body[pos + 1 : pos + 4]
            if not re.fullmatch("[0-7]{3}", digits):
                raise TemplateSyntaxError(f"invalid syntax: {text}")
            out.append(chr(int(digits, 8)))
            pos += 4
        else:
            raise TemplateSyntaxError(f"invalid syntax: {text}")
    return "".join(out)


def _go_int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        if re.fullmatch(r"[-+]?0[0-7_]+", text):
            return int(text.replace("0", "0o", 1), 0)
    raise TemplateSyntaxError(f"number {text} is not supported (integers only)")


# -- Execution --------------------------------------------------------------------------


class GoTemplate:
    """One Go template, parsed at setup; ``render`` runs it on a query's data."""

    def __init__(self, text: str, schema: Schema = None) -> None:
        self.text = text
        self.nodes = _Parser(text, schema).parse()

    def render(self, data: Any) -> str:
        out: list[str] = []
        _Run(data, out).nodes(self.nodes, data, [{"$": data}])
        return "".join(out)


class _Run:
    def __init__(self, data: Any, out: list[str]) -> None:
        self.data = data
        self.out = out
        self.steps = 0

    def nodes(self, nodes: Sequence[_Node], dot: Any, scopes: list[dict[str, Any]]) -> None:
        for node in nodes:
            if isinstance(node, _Text):
                self.out.append(node.text)
            elif isinstance(node, _Action):
                value = self.pipe(node.pipe, dot, scopes)
                if not node.pipe.declare:
                    self.out.append(go_print(value))
            else:
                self.control(node, dot, scopes)

    def control(self, node: _Control, dot: Any, scopes: list[dict[str, Any]]) -> None:
        inner = [*scopes, {}]
        value = self.pipe(node.pipe, dot, inner)
        if node.keyword == "range":
            self.range(node, value, dot, inner)
            return
        if truth(value):
            self.nodes(node.body, value if node.keyword == "with" else dot, inner)
        else:
            self.nodes(node.otherwise, dot, [*scopes, {}])

    def range(self, node: _Control, value: Any, dot: Any, scopes: list[dict[str, Any]]) -> None:
        if value is None or value is NO_VALUE:
            items: list[tuple[Any, Any]] = []
        elif isinstance(value, list | tuple | str):
            if isinstance(value, str):
                raise TemplateExecError("range can't iterate over a string")
            items = list(enumerate(value))
        elif isinstance(value, dict):
            items = sorted(value.items())
        elif isinstance(value, int) and not isinstance(value, bool):
            items = [(i, i) for i in range(value)]
        else:
            raise TemplateExecError(f"range can't iterate over {go_print(value)}")
        if not items:
            self.nodes(node.otherwise, dot, [*scopes[:-1], {}])
            return
        names = node.pipe.declare
        for key, item in items:
            self.steps += 1
            if self.steps > 10000:
                raise TemplateExecError("too many range iterations")
            scope = dict(scopes[-1])
            if len(names) == 2:
                scope[names[0]], scope[names[1]] = key, item
            elif names:
                scope[names[0]] = item
            self.nodes(node.body, item, [*scopes[:-1], scope])

    def pipe(self, pipe: _Pipe, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        value: Any = _NOTHING
        for command in pipe.commands:
            value = self.command(command, dot, scopes, value)
        if pipe.declare and len(pipe.declare) == 1:
            name = pipe.declare[0]
            if pipe.assign:
                for scope in reversed(scopes):
                    if name in scope:
                        scope[name] = value
                        break
            else:
                scopes[-1][name] = value
        return value

    def command(
        self, command: list[_Arg], dot: Any, scopes: list[dict[str, Any]], piped: Any
    ) -> Any:
        head = command[0]
        if isinstance(head, _Func):
            args = [self.arg(arg, dot, scopes) for arg in command[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            if head.name in ("and", "or"):
                return _and_or(head.name, args)
            return _call(head.name, args)
        if isinstance(head, _Field) and (len(command) > 1 or piped is not _NOTHING):
            # A method with arguments (.Meta "name"): only the last link takes them.
            base = self.field(_Field(head.base, head.chain[:-1]), dot, scopes)
            args = [self.arg(arg, dot, scopes) for arg in command[1:]]
            if piped is not _NOTHING:
                args.append(piped)
            method = base.methods.get(head.chain[-1]) if isinstance(base, GoStruct) else None
            if method is None:
                raise TemplateExecError(f"can't give argument to non-function {head.chain[-1]}")
            return method(*args)
        if piped is not _NOTHING:
            raise TemplateExecError("can't give argument to non-function")
        return self.arg(head, dot, scopes)

    def arg(self, arg: _Arg, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        if isinstance(arg, _Literal):
            return arg.value
        if isinstance(arg, _Func):
            raise TemplateExecError(f"function {arg.name} used as a value")
        return self.field(arg, dot, scopes)

    def field(self, arg: _Field, dot: Any, scopes: list[dict[str, Any]]) -> Any:
        if arg.base is None:
            value = dot
        elif isinstance(arg.base, _Pipe):
            value = self.pipe(arg.base, dot, scopes)
        else:
            for scope in reversed(scopes):
                if arg.base in scope:
                    value = scope[arg.base]
                    break
            else:
                raise TemplateExecError(f"undefined variable {arg.base}")
        for name in arg.chain:
            value = _field_of(value, name)
        return value


_NOTHING = object()


def _field_of(value: Any, name: str) -> Any:
    if isinstance(value, GoStruct):
        if name in value.fields:
            return value.fields[name]
        if name in value.methods:
            return value.methods[name]()
        raise TemplateExecError(f"can't evaluate field {name} in type {value.type_name}")
    if isinstance(value, dict):
        return value.get(name, NO_VALUE)
    if value is None or value is NO_VALUE:
        raise TemplateExecError(f"nil pointer evaluating .{name}")
    raise TemplateExecError(f"can't evaluate field {name} in type {_go_type(value)}")


def _go_type(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list | tuple):
        return "[]string"
    if isinstance(value, dict):
        return "map[string]string"
    return type(value).__name__


def truth(value: Any) -> bool:
    """Go's truth: false, 0, nil, and empty strings, lists and maps are false."""
    if value is None or value is NO_VALUE:
        return False
    if isinstance(value, GoStruct):
        return True
    return bool(value)


def go_print(value: Any) -> str:
    """A value as Go's ``fmt.Sprint`` prints it (for the values templates meet)."""
    if value is NO_VALUE:
        return "<no value>"
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list | tuple):
        return "[" + " ".join(go_print(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{go_print(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, GoStruct):
        return "{" + " ".join(go_print(v) for v in value.fields.values()) + "}"
    return str(value)


def _and_or(name: str, args: list[Any]) -> Any:
    if not args:
        raise TemplateExecError(f"wrong number of args for {name}: want at least 1 got 0")
    for value in args:
        if truth(value) != (name == "and"):
            return value
    return args[-1]


def _want(name: str, args: list[Any], count: int) -> None:
    if len(args) != count:
        raise TemplateExecError(f"wrong number of args for {name}: want {count} got {len(args)}")


def _call(name: str, args: list[Any]) -> Any:
    if name == "not":
        _want(name, args, 1)
        return not truth(args[0])
    if name == "len":
        _want(name, args, 1)
        if isinstance(args[0], str | list | tuple | dict):
            return len(args[0].encode() if isinstance(args[0], str) else args[0])
        raise TemplateExecError(f"error calling len: len of type {_go_type(args[0])}")
    if name == "index":
        return _index(args)
    if name == "slice":
        return _slice(args)
    if name == "print":
        return _sprint(args)
    if name == "println":
        return " ".join(go_print(a) for a in args) + "\n"
    if name == "printf":
        if not args or not isinstance(args[0], str):
            raise TemplateExecError("printf: the format must be a string")
        return go_sprintf(args[0], args[1:])
    if name == "parseInt":
        _want(name, args, 3)
        return parse_uint(*args)
    return _compare(name, args)


def _index(args: list[Any]) -> Any:
    if not args:
        raise TemplateExecError("wrong number of args for index: want at least 1 got 0")
    value = args[0]
    for key in args[1:]:
        if isinstance(value, dict):
            if not isinstance(key, str):
                raise TemplateExecError("error calling index: value has type int; should be string")
            value = value.get(key, "")  # index gives the zero value for a missing key
        elif isinstance(value, list | tuple | str):
            if not isinstance(key, int) or isinstance(key, bool):
                raise TemplateExecError(
                    "error calling index: cannot index slice/array with non-integer"
                )
            if not 0 <= key < len(value):
                raise TemplateExecError(f"error calling index: index out of range: {key}")
            value = value[key] if not isinstance(value, str) else value.encode()[key]
        else:
            raise TemplateExecError(
                f"error calling index: can't index item of type {_go_type(value)}"
            )
    return value


def _slice(args: list[Any]) -> Any:
    if not args:
        raise TemplateExecError("wrong number of args for slice: want at least 1 got 0")
    value, bounds = args[0], args[1:]
    if not isinstance(value, str | list | tuple) or len(bounds) > 2:
        raise TemplateExecError("error calling slice: can't slice item")
    if not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds):
        raise TemplateExecError("error calling slice: non-integer slice index")
    low = bounds[0] if bounds else 0
    high = bounds[1] if len(bounds) > 1 else len(value)
    if not 0 <= low <= high <= len(value):
        raise TemplateExecError(f"error calling slice: index out of range: {high}")
    return value[low:high]


def _sprint(args: list[Any]) -> str:
    out: list[str] = []
    for index, value in enumerate(args):
        if index and not isinstance(value, str) and not isinstance(args[index - 1], str):
            out.append(" ")
        out.append(go_print(value))
    return "".join(out)


def _compare(name: str, args: list[Any]) -> bool:
    if len(args) < 2 or (name != "eq" and len(args) != 2):
        raise TemplateExecError(f"wrong number of args for {name}")
    first = args[0]

    def kind(value: Any) -> str:
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, int):
            return "int"
        if isinstance(value, str):
            return "string"
        if value is None or value is NO_VALUE:
            return "nil"
        raise TemplateExecError(f"error calling {name}: invalid type for comparison")

    for other in args[1:]:
        if kind(first) != kind(other):
            raise TemplateExecError(f"error calling {name}: incompatible types for comparison")
    if name == "eq":
        return any(first == other for other in args[1:])
    other = args[1]
    if name == "ne":
        return bool(first != other)
    if kind(first) == "bool":
        raise TemplateExecError(f"error calling {name}: invalid type for comparison")
    return bool(
        {"lt": first < other, "le": first <= other, "gt": first > other, "ge": first >= other}[name]
    )


def parse_uint(text: Any, base: Any, bits: Any) -> int:
    """Go's ``strconv.ParseUint(s, base, bitSize)``, CoreDNS's ``parseInt``."""
    if not isinstance(text, str) or not isinstance(base, int) or not isinstance(bits, int):
        raise TemplateExecError("error calling parseInt: wrong argument types")
    size = bits or 64
    if not 0 < size <= 64:
        raise TemplateExecError(f"error calling parseInt: invalid bit size {bits}")
    digits = text
    if base == 0:
        base = 10
        lower = digits.lower()
        if lower.startswith("0x"):
            base, digits = 16, digits[2:]
        elif lower.startswith("0o"):
            base, digits = 8, digits[2:]
        elif lower.startswith("0b"):
            base, digits = 2, digits[2:]
        elif digits.startswith("0") and len(digits) > 1:
            base, digits = 8, digits[1:]
        if "_" in digits and not re.fullmatch(r"_?[0-9A-Za-z]+(_[0-9A-Za-z]+)*", digits):
            raise TemplateExecError(
                f'error calling parseInt: strconv.ParseUint: parsing "{text}": invalid syntax'
            )
        digits = digits.replace("_", "")
    elif not 2 <= base <= 36:
        raise TemplateExecError(f"error calling parseInt: invalid base {base}")
    if not digits or not re.fullmatch(r"[0-9A-Za-z]+", digits):
        raise TemplateExecError(
            f'error calling parseInt: strconv.ParseUint: parsing "{text}": invalid syntax'
        )
    try:
        value = int(digits, base)
    except ValueError:
        raise TemplateExecError(
            f'error calling parseInt: strconv.ParseUint: parsing "{text}": invalid syntax'
        ) from None
    if value >= 1 << size:
        raise TemplateExecError(
            f'error calling parseInt: strconv.ParseUint: parsing "{text}": value out of range'
        )
    return value


_VERB = re.compile(r"%([-+# 0]*)(\d*)(?:\.(\d+))?([a-zA-Z%])")


def go_sprintf(fmt: str, args: Sequence[Any]) -> str:
    """Go's ``fmt.Sprintf`` for the verbs templates use: %s %v %d %x %X %o %q %c %t %%."""
    out: list[str] = []
    pos = 0
    index = 0
    for match in _VERB.finditer(fmt):
        out.append(fmt[pos : match.start()])
        pos = match.end()
        flags, width, precision, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if index >= len(args):
            out.append(f"%!{verb}(MISSING)")
            continue
        value = args[index]
        index += 1
        out.append(_format(value, flags, width, precision, verb))
    out.append(fmt[pos:])
    if index < len(args):
        extra = ", ".join(f"{_go_type(a)}={go_print(a)}" for a in args[index:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _format(value: Any, flags: str, width: str, precision: str | None, verb: str) -> str:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if verb in "dxXoc" and not is_int:
        return f"%!{verb}({_go_type(value)}={go_print(value)})"
    if verb == "t" and not isinstance(value, bool):
        return f"%!t({_go_type(value)}={go_print(value)})"
    if verb in "sv" or verb == "t":
        text = go_print(value)
        if precision is not None and verb != "t":
            text = text[: int(precision)]
    elif verb == "q":
        text = '"' + go_print(value).replace("\\", "\\\\").replace('"', '\\"') + '"'
    elif verb == "c":
        text = chr(value)
    elif verb in "dxXo":
        spec = {"d": "d", "x": "x", "X": "X", "o": "o"}[verb]
        sign = "+" if "+" in flags else (" " if " " in flags else "")
        alt = "#" if "#" in flags and verb != "d" else ""
        text = format(value, f"{sign}{alt}{spec}")
        if alt and verb == "o":
            text = text.replace("0o", "0")
    else:
        return f"%!{verb}({_go_type(value)}={go_print(value)})"
    if width:
        size = int(width)
        if "-" in flags:
            text = text.ljust(size)
        elif "0" in flags and verb in "dxXo":
            sign = text[0] if text[:1] in "+- " else ""
            text = sign + text[len(sign) :].rjust(size - len(sign), "0")
        else:
            text = text.rjust(size)
    return text
