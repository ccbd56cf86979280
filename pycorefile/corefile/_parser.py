"""Parse Corefile tokens with the Lark grammar and build the model.

The lexer's words are fed one by one into Lark's interactive LALR parser.
Like CoreDNS, ``import`` is expanded while parsing: when the parser accepts
an import statement at the current position, the import's tokens are spliced
into the stream in its place. Environment references are substituted as each
word is fed. The finished tree is then turned into ``ServerBlock`` objects.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from lark import Lark, Tree
from lark import Token as LarkToken
from lark.exceptions import UnexpectedToken
from lark.lexer import Lexer
from lark.parsers.lalr_interactive_parser import InteractiveParser

from ._env import EnvExpansionError, expand_env
from ._imports import Importer, ImportProblem
from ._lexer import RawToken, lex, source_lines
from ._model import CorefileError, Directive, ServerBlock, Token

log = logging.getLogger("pycorefile.corefile")

# CoreDNS's limits on import expansions; they also bound what cycle detection
# cannot see (for instance a file reached again through a differently named symlink).
MAX_SNIPPET_EXPANSIONS = 10_000
MAX_FILE_EXPANSIONS = 100_000
# Not a CoreDNS limit: keeps the model builder's recursion bounded.
MAX_NESTING = 100

_WORD_TYPES = frozenset({"WORD", "CWORD", "EMPTY", "PWORD"})


class _NoLexer(Lexer):
    """Placeholder: tokens are fed to the parser by ``_Feeder``, never lexed by Lark."""

    def __init__(self, conf: Any) -> None:
        pass

    def lex(self, lexer_state: Any, parser_state: Any) -> Any:
        raise NotImplementedError("the Corefile parser is fed tokens directly")


@lru_cache(maxsize=1)
def _lark() -> Lark:
    """Build the LALR parser once; ``strict`` turns any grammar conflict into an error."""
    grammar = Path(__file__).with_name("_grammar.lark").read_text(encoding="utf-8")
    return Lark(grammar, parser="lalr", lexer=_NoLexer, strict=True)


def _accepts(ip: InteractiveParser) -> set[str]:
    """The terminals the parser would accept next (lark leaves this untyped)."""
    accepted: set[str] = ip.accepts()  # type: ignore[no-untyped-call]
    return accepted


@dataclass(frozen=True, slots=True)
class _Frame:
    """One level of import nesting: a file (by real path) or a snippet (by name)."""

    kind: str
    key: str
    label: str


@dataclass(slots=True)
class _Pending:
    """A token waiting to be fed, with the imports it came through."""

    tok: RawToken
    chain: tuple[_Frame, ...]
    force_nl: bool = False


@dataclass(slots=True)
class _Fed:
    """A token handed to Lark: the raw token and its value after env substitution."""

    tok: RawToken
    value: str


@dataclass(slots=True)
class _Snippet:
    """A snippet definition: its raw body tokens and where it was declared."""

    name: str
    where: RawToken
    tokens: list[RawToken] = field(default_factory=list)


def _classify(value: str) -> str:
    """The terminal type of a word, from its value after env substitution."""
    if value == "":
        return "EMPTY"
    if value.endswith(","):
        return "CWORD"
    if len(value) >= 2 and value.startswith("(") and value.endswith(")"):
        return "PWORD"
    return "WORD"


def _same_line(a: RawToken, b: RawToken) -> bool:
    """CoreDNS's rule: ``b`` is on the line where ``a`` ends, in the same file."""
    return a.file == b.file and a.end_line == b.line


def _where(tok: RawToken, column: bool = True) -> str:
    """``FILE:LINE[:COL]`` of a token, for messages that point elsewhere."""
    return f"{tok.file}:{tok.line}:{tok.column}" if column else f"{tok.file}:{tok.line}"


class _Feeder:
    """Feeds tokens to the interactive parser, expanding imports and snippets."""

    def __init__(
        self,
        env: Mapping[str, str],
        importer: Importer,
        sources: dict[str, list[str]],
    ) -> None:
        self.env = env
        self.importer = importer
        self.sources = sources
        self.ip: InteractiveParser = _lark().parse_interactive(None)
        self.queue: deque[_Pending] = deque()
        self.fed: list[_Fed] = []
        self.prev: _Pending | None = None
        self.last_type = ""
        self.last_closed = ""
        self.braces: list[tuple[str, RawToken]] = []
        self.snippets: dict[str, _Snippet] = {}
        self.capture: _Snippet | None = None
        self.last_paren: tuple[str, RawToken] | None = None
        self.snippet_expansions = 0
        self.file_expansions = 0

    # ---- errors

    def error(self, tok: RawToken, message: str) -> CorefileError:
        """A CorefileError at ``tok``, with the offending source line."""
        lines = self.sources.get(tok.file)
        source = lines[tok.line - 1] if lines and 0 < tok.line <= len(lines) else None
        return CorefileError(message, tok.file, tok.line, tok.column, source)

    def _after_block_close(self) -> bool:
        """Whether the last word fed closed a directive's block (on this line)."""
        return self.last_type == "_RBRACE" and self.last_closed == "directive"

    def _brace_error(self, tok: RawToken, accepts: set[str]) -> CorefileError:
        """Explain a ``{`` the grammar does not accept here."""
        if self._after_block_close():
            msg = "Unexpected '{' after '}' - a block's closing '}' must end its line"
        elif "_RBRACE" in accepts:
            msg = (
                "Unexpected '{' where a directive should start - "
                "a block must open on the same line as its directive"
            )
        elif "_EOF" in accepts:
            msg = "Unexpected '{' - a server block needs at least one key before '{'"
        else:
            msg = "Expected another address but had '{' - check for extra comma"
        return self.error(tok, msg)

    def _syntax_error(
        self, kind: str, tok: RawToken, value: str, expected: set[str]
    ) -> CorefileError:
        """Explain a token (or the end of input) the grammar does not accept here."""
        if kind == "_EOF":
            if "_SLBRACE" in expected:
                msg = "Syntax error: Unexpected EOF, expecting '{'"
            elif self.braces:
                msg = f"Unexpected EOF - the '{{' at {_where(self.braces[-1][1])} is never closed"
            elif "WORD" in expected:
                msg = "Unexpected EOF - a trailing ',' means another key must follow"
            else:
                msg = "Unexpected EOF"
        elif "_SLBRACE" in expected:
            msg = f"Syntax error: Unexpected token '{value}', expecting '{{'"
        elif kind == "_NL":
            msg = "Unexpected line break"
        elif kind == "_RBRACE":
            msg = "Unexpected '}' because no matching opening brace"
            if self.braces:
                msg += " - a closing '}' must be the first token on its line"
        elif self._after_block_close():
            msg = (
                f"Unexpected token '{value}' after '}}' - a block's closing '}}' must end its line"
            )
        else:
            msg = f"Unexpected token '{value}'"
        return self.error(tok, msg)

    # ---- feeding

    def _expand(self, p: _Pending) -> str:
        """The token's text after environment substitution."""
        try:
            return expand_env(p.tok.text, self.env)
        except EnvExpansionError as err:
            raise self.error(p.tok, str(err)) from None

    def _feed(self, kind: str, value: str, tok: RawToken) -> None:
        """Hand one terminal to Lark; its ``start_pos`` indexes ``self.fed``."""
        index = len(self.fed)
        self.fed.append(_Fed(tok, value))
        lark_tok = LarkToken(kind, value, start_pos=index, line=tok.line, column=tok.column)
        try:
            self.ip.feed_token(lark_tok)
        except UnexpectedToken as err:
            raise self._syntax_error(kind, tok, value, set(err.expected)) from None
        self.last_type = kind

    def _feed_word(self, p: _Pending) -> None:
        """Type a word (braces are told apart by what the parser accepts) and feed it."""
        raw = p.tok.text
        value = self._expand(p)
        closed = ""
        if raw == "{":
            accepts = _accepts(self.ip)
            if "_SLBRACE" in accepts:
                kind, brace = "_SLBRACE", "snippet"
            elif "_LBRACE" in accepts:
                kind, brace = "_LBRACE", "server"
            elif "_DLBRACE" in accepts:
                kind, brace = "_DLBRACE", "directive"
            else:
                raise self._brace_error(p.tok, accepts)
            if len(self.braces) >= MAX_NESTING:
                raise self.error(p.tok, f"Blocks nested too deeply (more than {MAX_NESTING})")
            self._feed(kind, value, p.tok)
            self.braces.append((brace, p.tok))
            if brace == "snippet":
                self.last_closed = ""
                self._begin_snippet()
                return
        elif raw == "}":
            self._feed("_RBRACE", value, p.tok)
            closed = self.braces.pop()[0] if self.braces else "braceless"
            if closed == "snippet":
                self._end_snippet()
        else:
            kind = _classify(value)
            self._feed(kind, value, p.tok)
            if kind == "PWORD":
                self.last_paren = (value, p.tok)
        self.last_closed = closed
        if self.capture is not None and closed != "snippet":
            self.capture.tokens.append(p.tok)

    def _begin_snippet(self) -> None:
        """Start recording a snippet body; its name is the block's ``(name)`` key."""
        assert self.last_paren is not None  # the grammar only accepts _SLBRACE after (name)
        value, where = self.last_paren
        name = value[1:-1]
        if name in self.snippets:
            first = self.snippets[name].where
            raise self.error(
                where,
                f"redeclaration of previously declared snippet {name} "
                f"(first declared at {_where(first, column=False)})",
            )
        self.capture = _Snippet(name, where)

    def _end_snippet(self) -> None:
        """Store the recorded snippet, rejecting one that imports itself."""
        snippet = self.capture
        assert snippet is not None
        self.capture = None
        toks = snippet.tokens
        # CoreDNS rejects a snippet that imports itself even if it is never used.
        for i, tok in enumerate(toks[:-1]):
            at_line_start = i == 0 or toks[i - 1].file != tok.file or toks[i - 1].line != tok.line
            if tok.text == "import" and at_line_start:
                target = self._expand(_Pending(toks[i + 1], ()))
                if target == snippet.name:
                    label = f"snippet {snippet.name}"
                    raise self.error(tok, f"Import cycle: {label} -> {label}")
        self.snippets[snippet.name] = snippet

    def _args_same_line(self, a: _Pending, b: _Pending) -> bool:
        """Whether ``b`` is an argument on ``a``'s line (spliced tokens never are)."""
        return not b.force_nl and _same_line(a.tok, b.tok)

    def _import(self, p: _Pending) -> None:
        """Handle ``import ARG`` at ``p``: check it, feed it, splice in what it names."""
        queue = self.queue
        if not queue or not self._args_same_line(p, queue[0]):
            raise self.error(p.tok, "Wrong argument count or unexpected line ending after 'import'")
        arg = queue.popleft()
        pattern = self._expand(arg)
        if pattern == "":
            raise self.error(arg.tok, "Import requires a non-empty filepath")
        if queue and self._args_same_line(arg, queue[0]):
            raise self.error(queue[0].tok, "Import takes only one argument (glob pattern or file)")
        self._feed("_IMPORT", "import", p.tok)
        self._feed("IMPORT_ARG", pattern, arg.tok)
        if pattern in self.snippets:
            spliced = self._import_snippet(p, arg, pattern)
        else:
            spliced = self._import_files(p, arg, pattern)
        if queue:
            queue[0].force_nl = True
        if spliced:
            spliced[0].force_nl = True
            queue.extendleft(reversed(spliced))
        self.prev = arg

    def _check_cycle(self, at: RawToken, chain: tuple[_Frame, ...], frame: _Frame) -> None:
        """Refuse to enter a file or snippet that is already being imported."""
        for i, seen in enumerate(chain):
            if seen.kind == frame.kind and seen.key == frame.key:
                path = " -> ".join([f.label for f in chain[i:]] + [frame.label])
                raise self.error(at, f"Import cycle: {path}")

    def _import_snippet(self, p: _Pending, arg: _Pending, name: str) -> list[_Pending]:
        """The tokens of snippet ``name``, to replay where ``p`` imports it."""
        frame = _Frame("snippet", name, f"snippet {name}")
        self._check_cycle(arg.tok, p.chain, frame)
        if self.snippet_expansions >= MAX_SNIPPET_EXPANSIONS:
            raise self.error(
                arg.tok, f"maximum snippet import depth ({MAX_SNIPPET_EXPANSIONS}) exceeded"
            )
        self.snippet_expansions += 1
        chain = (*p.chain, frame)
        return [_Pending(tok, chain) for tok in self.snippets[name].tokens]

    def _import_files(self, p: _Pending, arg: _Pending, pattern: str) -> list[_Pending]:
        """The tokens of the files ``pattern`` names, relative to the importing file."""
        if self.file_expansions >= MAX_FILE_EXPANSIONS:
            raise self.error(arg.tok, f"maximum file import depth ({MAX_FILE_EXPANSIONS}) exceeded")
        self.file_expansions += 1
        base_dir = os.path.dirname(os.path.abspath(p.tok.file))
        try:
            match = self.importer.resolve(pattern, base_dir)
        except ImportProblem as err:
            raise self.error(arg.tok, str(err)) from None
        if match.warning:
            log.warning("%s", match.warning)
        spliced: list[_Pending] = []
        for path in match.paths:
            absolute = os.path.abspath(path)
            frame = _Frame("file", os.path.realpath(path), absolute)
            self._check_cycle(arg.tok, p.chain, frame)
            try:
                text = self.importer.read(path)
            except ImportProblem as err:
                raise self.error(arg.tok, str(err)) from None
            self.sources[absolute] = source_lines(text)
            chain = (*p.chain, frame)
            spliced.extend(_Pending(tok, chain) for tok in lex(text, absolute))
        return spliced

    def run(self, tokens: Iterable[RawToken], chain: tuple[_Frame, ...]) -> Tree[LarkToken]:
        """Feed every token (expanding imports on the way) and return Lark's tree."""
        self.queue.extend(_Pending(tok, chain) for tok in tokens)
        while self.queue:
            p = self.queue.popleft()
            if self.prev is not None and (p.force_nl or not _same_line(self.prev.tok, p.tok)):
                self._feed("_NL", "", p.tok)
            if p.tok.text == "import" and self.capture is None and "_IMPORT" in _accepts(self.ip):
                self._import(p)
                continue
            self._feed_word(p)
            self.prev = p
        last = self.prev.tok if self.prev is not None else RawToken("", "", 1, 1)
        self._feed("_EOF", "", last)
        tree: Tree[LarkToken] = self.ip.feed_eof()  # type: ignore[no-untyped-call]
        return tree


# ---- tree → model


class _Builder:
    """Turns Lark's tree into the model, looking tokens up in the fed table."""

    def __init__(self, fed: list[_Fed], sources: dict[str, list[str]]) -> None:
        self.fed = fed
        self.sources = sources

    def token(self, entry: _Fed, value: str) -> Token:
        """A model token for a fed word, with its source line for error messages."""
        tok = entry.tok
        lines = self.sources.get(tok.file)
        source = lines[tok.line - 1] if lines and 0 < tok.line <= len(lines) else None
        return Token(value, tok.file, tok.line, tok.column, source)

    def directives(self, tree: Tree[LarkToken]) -> tuple[Directive, ...]:
        """The directives of a body or directive block (import statements dropped)."""
        return tuple(
            self.directive(child)
            for child in tree.children
            if isinstance(child, Tree) and child.data == "directive"
        )

    def directive(self, tree: Tree[LarkToken]) -> Directive:
        """One directive line: name, arguments and its block, if any."""
        words = [self.fed[c.start_pos or 0] for c in tree.children if isinstance(c, LarkToken)]
        sub = next((c for c in tree.children if isinstance(c, Tree)), None)
        name = words[0]
        return Directive(
            name=name.value,
            args=tuple(w.value for w in words[1:]),
            file=name.tok.file,
            line=name.tok.line,
            column=name.tok.column,
            block=self.directives(sub) if sub is not None else None,
            arg_tokens=tuple(self.token(w, w.value) for w in words[1:]),
        )

    def block(self, tree: Tree[LarkToken]) -> ServerBlock | None:
        """A server block, or None for a snippet or a block whose keys are all empty."""
        keys: list[Token] = []
        body: Tree[LarkToken] | None = None
        first: _Fed | None = None
        for child in tree.children:
            if isinstance(child, LarkToken):
                if child.type not in _WORD_TYPES:
                    continue
                entry = self.fed[child.start_pos or 0]
                first = first or entry
                if child.type == "EMPTY":
                    continue
                value = entry.value[:-1] if child.type == "CWORD" else entry.value
                keys.append(self.token(entry, value))
            elif child.data == "snippet_body":
                return None
            elif child.data in ("body", "braceless"):
                body = child
        if not keys:
            if first is not None:
                log.warning(
                    "%s: server block has no keys (all empty after environment "
                    "substitution); ignored",
                    _where(first.tok, column=False),
                )
            return None
        return ServerBlock(
            keys=tuple(k.value for k in keys),
            directives=self.directives(body) if body is not None else (),
            file=keys[0].file,
            line=keys[0].line,
            column=keys[0].column,
            key_tokens=tuple(keys),
        )


def parse(
    text: str,
    filename: str,
    env: Mapping[str, str],
    importer: Importer,
) -> list[ServerBlock]:
    """Parse Corefile ``text`` read from ``filename`` into server blocks."""
    sources = {filename: source_lines(text)}
    tokens = lex(text, filename)
    feeder = _Feeder(env, importer, sources)
    root = _Frame("file", os.path.realpath(filename), filename)
    tree = feeder.run(tokens, (root,))
    builder = _Builder(feeder.fed, sources)
    blocks: list[ServerBlock] = []
    for child in tree.children:
        if isinstance(child, Tree) and child.data == "block":
            block = builder.block(child)
            if block is not None:
                blocks.append(block)
    return blocks
