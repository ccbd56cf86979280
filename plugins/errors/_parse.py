"""``errors [stdout] { stacktrace; consolidate DURATION REGEXP [LEVEL] [show_first] }``."""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pycorefile import Directive, SetupError, check_args, parse_duration
from pycorefile.plugin import go_duration
from pycorefile.re2 import Re2Error, compile_re2

MAX_REGEXP = 10000
LEVELS = {
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}


@dataclass(frozen=True)
class Consolidate:
    """Errors matching ``pattern`` are counted for ``period`` seconds and reported once."""

    period: float
    pattern: re.Pattern[str]
    level: int = logging.ERROR
    show_first: bool = False
    regexp: str = ""
    """REGEXP as written in the Corefile (``pattern`` is its translation); shown in reports."""

    @property
    def period_text(self) -> str:
        return go_duration(self.period)


@dataclass(frozen=True)
class ErrorsConfig:
    stacktrace: bool = False
    """Log the Python traceback with each error."""
    consolidate: tuple[Consolidate, ...] = ()


def parse_errors(directives: Sequence[Directive]) -> ErrorsConfig:
    d = directives[0]
    check_args(d, 0, 1)
    if d.args and d.args[0] != "stdout":
        raise SetupError(f"invalid log file: {d.args[0]}", d, 0)
    stacktrace = False
    rules: list[Consolidate] = []
    for option in d.block or ():
        if option.name == "stacktrace":
            check_args(option, 0, 0)
            stacktrace = True
        elif option.name == "consolidate":
            rules.append(_parse_consolidate(option))
        else:
            raise SetupError(f"unknown property '{option.name}'", option)
    return ErrorsConfig(stacktrace, tuple(rules))


def _parse_consolidate(option: Directive) -> Consolidate:
    check_args(option, 2, 4)
    args = option.args
    period = parse_duration(args[0], option, 0)
    if period <= 0:
        raise SetupError("consolidate duration must be positive", option, 0)
    if len(args[1]) > MAX_REGEXP:
        raise SetupError(f"regexp longer than {MAX_REGEXP} characters", option, 1)
    try:
        pattern = compile_re2(args[1])
    except Re2Error as exc:
        raise SetupError(str(exc), option, 1) from None
    level = logging.ERROR
    show_first = False
    for i, extra in enumerate(args[2:], start=2):
        if extra == "show_first" and i == len(args) - 1:
            show_first = True
        elif extra in LEVELS and i == 2:
            level = LEVELS[extra]
        else:
            raise SetupError(f"unknown log level argument in consolidate: {extra}", option, i)
    return Consolidate(period, pattern, level, show_first, args[1])
