"""``view NAME { expr EXPRESSION ... }``: the view's name and its checked expressions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from pycorefile import Directive, SetupError, check_args

from ._env import SIGNATURES
from ._expr import Env, ExpressionError, compile_expression


@dataclass(frozen=True)
class ViewConfig:
    name: str
    expressions: tuple[str, ...]
    evaluators: tuple[Callable[[Env], bool], ...]


def parse_view(directives: Sequence[Directive]) -> ViewConfig:
    """The block's view (once per block); every ``expr`` must hold (none: every query)."""
    d = directives[0]
    check_args(d, 1, 1)
    texts: list[str] = []
    evaluators: list[Callable[[Env], bool]] = []
    for option in d.block or ():
        if option.name != "expr":
            raise SetupError(f"unknown property '{option.name}'", option)
        check_args(option, 1, None)
        text = " ".join(option.args)
        try:
            evaluators.append(compile_expression(text, SIGNATURES))
        except ExpressionError as exc:
            raise SetupError(exc.message, option, _argument_at(option.args, exc.column)) from None
        texts.append(text)
    return ViewConfig(d.args[0], tuple(texts), tuple(evaluators))


def _argument_at(args: Sequence[str], column: int) -> int:
    """Which argument (joined by single spaces) holds ``column`` of the joined text."""
    end = 0
    for index, arg in enumerate(args):
        end += len(arg) + 1
        if column < end:
            return index
    return len(args) - 1
