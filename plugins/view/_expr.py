"""The view plugin's expressions: a safe subset of expr-lang, parsed and checked at setup.

CoreDNS evaluates ``expr`` with the expr-lang library. This module reads the
part of that language its documented expressions use, turns an expression
into a tree of plain Python closures (never ``eval``), and checks names,
arities and operand types at setup, so a mistake is a Corefile error with its
position and never a surprise at query time.

Supported: string (``'``, ``"``, backtick), integer, float, ``true``,
``false``, ``nil`` and array literals; ``! not -``; ``== != < <= > >=``;
``&& and || or``; ``in``, ``not in``, ``matches``, ``contains``,
``startsWith``, ``endsWith``; ``+ - * / %``; ``?:`` and ``??``; parentheses;
indexing ``a[i]``; the environment's functions (see ``_env``) and the
builtins ``len lower upper trim split replace hasPrefix hasSuffix`` and
``all any none one filter map count`` with a ``{ ... }`` predicate over ``#``.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pycorefile.re2 import Re2Error, compile_re2

Value = Any
Env = Mapping[str, Callable[..., Value]]
"""The functions an expression may call, evaluated per query."""
Evaluate = Callable[[Env, Value], Value]
"""A compiled node: given the environment and the current ``#`` element."""


class ExpressionError(ValueError):
    """A mistake in an expression, with the column (0-based) where it is."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(f"{message} (column {column + 1})")
        self.message = message
        self.column = column


@dataclass(frozen=True)
class Signature:
    """An environment function: its argument types and result type."""

    args: tuple[str, ...]
    result: str


# -- Tokens ------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<number>\d+\.\d+|\d+)
    | (?P<string>'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|`[^`]*`)
    | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
    | (?P<op>\?\?|&&|\|\||==|!=|<=|>=|[-+*/%<>!?:()\[\],{}\#.])
    )""",
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", "'": "'", '"': '"', "0": "\0"}
_WORD_OPERATORS = {"and", "or", "not", "in", "matches", "contains", "startsWith", "endsWith"}


@dataclass(frozen=True)
class Token:
    kind: str  # number, string, name, op, end
    text: str
    column: int
    value: Value = None


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            column = len(text) - len(text[pos:].lstrip())
            raise ExpressionError(f"unexpected character {text[column]!r}", column)
        kind = m.lastgroup or "op"
        raw = m.group(kind)
        column = m.start(kind)
        value: Value = None
        if kind == "number":
            value = float(raw) if "." in raw else int(raw)
        elif kind == "string":
            value = _unquote(raw, column)
        elif kind == "name" and raw in _WORD_OPERATORS:
            kind = "op"
        tokens.append(Token(kind, raw, column, value))
        pos = m.end()
    tokens.append(Token("end", "", len(text)))
    return tokens


def _unquote(raw: str, column: int) -> str:
    if raw[0] == "`":
        return raw[1:-1]
    body, out, i = raw[1:-1], [], 0
    while i < len(body):
        c = body[i]
        if c == "\\":
            i += 1
            if body[i] not in _ESCAPES:
                raise ExpressionError(f"unknown escape \\{body[i]}", column + i)
            out.append(_ESCAPES[body[i]])
        else:
            out.append(c)
        i += 1
    return "".join(out)


# -- Parsing into typed closures ---------------------------------------------------------


@dataclass(frozen=True)
class Node:
    run: Evaluate
    type: str  # str, int, float, bool, list, nil, any
    column: int
    constant: bool = False


_BINDING = {
    "??": 1, "||": 2, "or": 2, "&&": 3, "and": 3,
    "==": 4, "!=": 4, "<": 4, "<=": 4, ">": 4, ">=": 4,
    "in": 4, "not": 4, "matches": 4, "contains": 4, "startsWith": 4, "endsWith": 4,
    "+": 5, "-": 5, "*": 6, "/": 6, "%": 6,
}  # fmt: skip
_TERNARY = 0


def _numeric(t: str) -> bool:
    return t in ("int", "float", "any")


def _same_kind(a: str, b: str) -> bool:
    if "any" in (a, b) or "nil" in (a, b):
        return True
    if _numeric(a) and _numeric(b):
        return True
    return a == b


class Parser:
    """A Pratt parser for one expression over the functions of ``signatures``."""

    def __init__(self, text: str, signatures: Mapping[str, Signature]) -> None:
        self.tokens = tokenize(text)
        self.pos = 0
        self.signatures = signatures
        self.in_predicate = 0

    # The token stream

    @property
    def token(self) -> Token:
        return self.tokens[self.pos]

    def take(self) -> Token:
        token = self.tokens[self.pos]
        self.pos += 1
        return token

    def expect(self, text: str) -> Token:
        token = self.take()
        if token.text != text:
            found = repr(token.text) if token.kind != "end" else "end of expression"
            raise ExpressionError(f"expected {text!r}, found {found}", token.column)
        return token

    # The grammar

    def parse(self) -> Node:
        node = self.expression(0)
        if self.token.kind != "end":
            raise ExpressionError(f"unexpected {self.token.text!r}", self.token.column)
        return node

    def expression(self, min_binding: int) -> Node:
        left = self.unary()
        while True:
            token = self.token
            if token.kind != "op":
                return left
            if token.text == "?" and min_binding <= _TERNARY:
                left = self.ternary(left)
                continue
            binding = _BINDING.get(token.text)
            if binding is None or binding < min_binding or binding == 0:
                return left
            self.take()
            if token.text == "not":
                self.expect("in")
                right = self.expression(binding + 1)
                left = _negate(_binary("in", left, right, token.column), token.column)
                continue
            right = self.expression(binding + 1)
            left = _binary(token.text, left, right, token.column)

    def ternary(self, condition: Node) -> Node:
        column = self.take().column
        _want(condition, "bool", "the condition of ?:")
        yes = self.expression(_TERNARY)
        self.expect(":")
        no = self.expression(_TERNARY)
        test, first, second = condition.run, yes.run, no.run
        kind = yes.type if yes.type == no.type else "any"
        return Node(lambda env, e: first(env, e) if test(env, e) else second(env, e), kind, column)

    def unary(self) -> Node:
        token = self.token
        if token.kind == "op" and token.text in ("!", "not"):
            self.take()
            return _negate(self.expression(_BINDING["=="] + 1), token.column)
        if token.kind == "op" and token.text == "-":
            self.take()
            operand = self.expression(_BINDING["*"] + 1)
            if not _numeric(operand.type):
                raise ExpressionError(f"invalid operation: - ({operand.type})", token.column)
            run = operand.run
            return Node(lambda env, e: -run(env, e), operand.type, token.column)
        return self.postfix(self.primary())

    def postfix(self, node: Node) -> Node:
        while self.token.text == "[" and self.token.kind == "op":
            column = self.take().column
            index = self.expression(0)
            self.expect("]")
            if node.type not in ("list", "str", "any"):
                raise ExpressionError(f"cannot index {node.type}", column)
            node = Node(_indexing(node.run, index.run), "any", column)
        return node

    def primary(self) -> Node:
        token = self.take()
        if token.kind in ("number", "string"):
            kind = "str" if token.kind == "string" else type(token.value).__name__
            return _constant(token.value, kind, token.column)
        if token.kind == "name":
            if token.text in ("true", "false"):
                return _constant(token.text == "true", "bool", token.column)
            if token.text == "nil":
                return _constant(None, "nil", token.column)
            if self.token.text == "(":
                return self.call(token)
            raise ExpressionError(f"unknown name {token.text}", token.column)
        if token.text == "(":
            node = self.expression(0)
            self.expect(")")
            return node
        if token.text == "[":
            items: list[Node] = []
            while self.token.text != "]":
                items.append(self.expression(0))
                if self.token.text != ",":
                    break
                self.take()
            self.expect("]")
            runs = [item.run for item in items]
            constant = all(item.constant for item in items)
            return Node(
                lambda env, e: [run(env, e) for run in runs], "list", token.column, constant
            )
        if token.text == "#":
            if not self.in_predicate:
                raise ExpressionError("# is only allowed in a predicate { ... }", token.column)
            return Node(lambda env, e: e, "any", token.column)
        found = repr(token.text) if token.kind != "end" else "end of expression"
        raise ExpressionError(f"unexpected {found}", token.column)

    def arguments(self) -> list[Node]:
        self.expect("(")
        args: list[Node] = []
        while self.token.text != ")":
            if self.token.text == "{":
                self.take()
                self.in_predicate += 1
                body = self.expression(0)
                self.in_predicate -= 1
                self.expect("}")
                args.append(Node(body.run, "predicate", body.column))
            else:
                args.append(self.expression(0))
            if self.token.text != ",":
                break
            self.take()
        self.expect(")")
        return args

    def call(self, name: Token) -> Node:
        args = self.arguments()
        signature = self.signatures.get(name.text)
        if signature is not None:
            return _env_call(name, signature, args)
        builtin = _BUILTINS.get(name.text)
        if builtin is None:
            raise ExpressionError(f"unknown function {name.text}", name.column)
        kinds, result, implementation = builtin
        _check_args(name, kinds, args)
        runs = [arg.run for arg in args]
        if kinds and kinds[-1] == "predicate":
            collection, predicate = runs

            def run_predicate(env: Env, e: Value) -> Value:
                return implementation(collection(env, e), lambda x: predicate(env, x))

            return Node(run_predicate, result, name.column)
        return Node(lambda env, e: implementation(*(r(env, e) for r in runs)), result, name.column)


def _indexing(base: Evaluate, at: Evaluate) -> Evaluate:
    return lambda env, e: base(env, e)[at(env, e)]


def _constant(value: Value, kind: str, column: int) -> Node:
    return Node(lambda env, e: value, kind, column, constant=True)


def _want(node: Node, kind: str, what: str) -> None:
    if node.type not in (kind, "any"):
        raise ExpressionError(f"{what} must be {kind}, not {node.type}", node.column)


def _negate(node: Node, column: int) -> Node:
    _want(node, "bool", "the operand of !")
    run = node.run
    return Node(lambda env, e: not run(env, e), "bool", column)


def _check_args(name: Token, kinds: Sequence[str], args: Sequence[Node]) -> None:
    if len(args) != len(kinds):
        raise ExpressionError(
            f"{name.text} takes {len(kinds)} argument(s), not {len(args)}", name.column
        )
    for kind, arg in zip(kinds, args, strict=True):
        if kind == "predicate":
            if arg.type != "predicate":
                raise ExpressionError(f"{name.text} needs a predicate {{ ... }}", arg.column)
        elif arg.type == "predicate":
            raise ExpressionError(f"unexpected predicate in {name.text}", arg.column)
        elif not _same_kind(kind, arg.type):
            raise ExpressionError(
                f"cannot use {arg.type} as argument (type {kind}) to {name.text}", arg.column
            )


def _env_call(name: Token, signature: Signature, args: list[Node]) -> Node:
    _check_args(name, signature.args, args)
    key = name.text
    if not args:
        return Node(lambda env, e: env[key](), signature.result, name.column)
    runs = [arg.run for arg in args]
    return Node(
        lambda env, e: env[key](*(run(env, e) for run in runs)), signature.result, name.column
    )


_COMPARISONS: dict[str, Callable[[Value, Value], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _matches(text: Value, pattern: Value) -> bool:
    return compile_re2(pattern).search(text) is not None


def _mismatched(op: str, left: str, right: str, column: int) -> ExpressionError:
    return ExpressionError(f"invalid operation: {op} (mismatched types {left} and {right})", column)


def _binary(op: str, left: Node, right: Node, column: int) -> Node:
    a, b = left.run, right.run
    lt, rt = left.type, right.type
    if op in ("&&", "and", "||", "or"):
        _want(left, "bool", f"the left operand of {op}")
        _want(right, "bool", f"the right operand of {op}")
        if op in ("&&", "and"):
            return Node(lambda env, e: a(env, e) and b(env, e), "bool", column)
        return Node(lambda env, e: a(env, e) or b(env, e), "bool", column)
    if op == "??":
        return Node(lambda env, e: x if (x := a(env, e)) is not None else b(env, e), "any", column)
    if op in ("==", "!="):
        if not _same_kind(lt, rt):
            raise _mismatched(op, lt, rt, column)
        test = _COMPARISONS[op]
        return Node(lambda env, e: test(a(env, e), b(env, e)), "bool", column)
    if op in ("<", "<=", ">", ">="):
        if not (_same_kind(lt, rt) and lt in ("int", "float", "str", "any")):
            raise _mismatched(op, lt, rt, column)
        test = _COMPARISONS[op]
        return Node(lambda env, e: test(a(env, e), b(env, e)), "bool", column)
    if op == "in":
        if rt not in ("list", "any"):
            raise ExpressionError(f"invalid operation: in ({rt} is not an array)", column)
        return Node(lambda env, e: a(env, e) in b(env, e), "bool", column)
    if op in ("matches", "contains", "startsWith", "endsWith"):
        _want(left, "str", f"the left operand of {op}")
        _want(right, "str", f"the right operand of {op}")
        if op == "matches":
            if right.constant:
                pattern = _regex(right.run({}, None), right.column)
                return Node(lambda env, e: pattern.search(a(env, e)) is not None, "bool", column)
            return Node(lambda env, e: _matches(a(env, e), b(env, e)), "bool", column)
        if op == "contains":
            return Node(lambda env, e: b(env, e) in a(env, e), "bool", column)
        if op == "startsWith":
            return Node(lambda env, e: a(env, e).startswith(b(env, e)), "bool", column)
        return Node(lambda env, e: a(env, e).endswith(b(env, e)), "bool", column)
    # arithmetic
    if op == "+" and lt == rt == "str":
        return Node(lambda env, e: a(env, e) + b(env, e), "str", column)
    if not (_numeric(lt) and _numeric(rt)):
        raise _mismatched(op, lt, rt, column)
    kind = "int" if lt == rt == "int" and op != "/" else ("any" if "any" in (lt, rt) else "float")
    if op == "+":
        return Node(lambda env, e: a(env, e) + b(env, e), kind, column)
    if op == "-":
        return Node(lambda env, e: a(env, e) - b(env, e), kind, column)
    if op == "*":
        return Node(lambda env, e: a(env, e) * b(env, e), kind, column)
    if op == "/":
        return Node(lambda env, e: a(env, e) / b(env, e), "float", column)
    return Node(lambda env, e: a(env, e) % b(env, e), kind, column)


def _regex(pattern: str, column: int) -> re.Pattern[str]:
    """A constant ``matches`` pattern, compiled once with RE2's meaning (or refused)."""
    try:
        return compile_re2(pattern)
    except Re2Error as exc:
        raise ExpressionError(f"bad regular expression: {exc}", column) from None


def _one(items: Sequence[Value], test: Callable[[Value], Value]) -> bool:
    return sum(1 for item in items if test(item)) == 1


_BUILTINS: dict[str, tuple[tuple[str, ...], str, Callable[..., Value]]] = {
    "len": (("any",), "int", len),
    "lower": (("str",), "str", str.lower),
    "upper": (("str",), "str", str.upper),
    "trim": (("str",), "str", str.strip),
    "split": (("str", "str"), "list", str.split),
    "replace": (("str", "str", "str"), "str", str.replace),
    "hasPrefix": (("str", "str"), "bool", str.startswith),
    "hasSuffix": (("str", "str"), "bool", str.endswith),
    "all": (("list", "predicate"), "bool", lambda xs, t: all(t(x) for x in xs)),
    "any": (("list", "predicate"), "bool", lambda xs, t: any(t(x) for x in xs)),
    "none": (("list", "predicate"), "bool", lambda xs, t: not any(t(x) for x in xs)),
    "one": (("list", "predicate"), "bool", _one),
    "filter": (("list", "predicate"), "list", lambda xs, t: [x for x in xs if t(x)]),
    "map": (("list", "predicate"), "list", lambda xs, t: [t(x) for x in xs]),
    "count": (("list", "predicate"), "int", lambda xs, t: sum(1 for x in xs if t(x))),
}


def compile_expression(text: str, signatures: Mapping[str, Signature]) -> Callable[[Env], bool]:
    """Check ``text`` and return its evaluator; ``ExpressionError`` for any mistake.

    The expression must be of type bool. At query time, an error while
    evaluating (a bad address given to ``incidr``, an index out of range)
    makes the expression false, as in CoreDNS.
    """
    node = Parser(text, signatures).parse()
    _want(node, "bool", "the expression")
    run = node.run

    def evaluate(env: Env) -> bool:
        try:
            return run(env, None) is True
        except Exception:
            return False

    return evaluate
