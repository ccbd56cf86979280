"""The ``auto`` directive: from Corefile lines to a frozen configuration (pure)."""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass

from pycorefile import Directive, SetupContext, SetupError, check_args, parse_zones
from pycorefile.re2 import Re2Error, compile_re2
from pycorefile_plugins.file import parse_reload

log = logging.getLogger("pycorefile")

DEFAULT_PATTERN = r"db\.(.*)"
DEFAULT_TEMPLATE = "{1}"
DEFAULT_RELOAD = 60.0
MAX_PATTERN_LEN = 10_000
_GROUP_REFERENCE = re.compile(r"\{(\d+)\}")


@dataclass(frozen=True)
class AutoConfig:
    """What one ``auto`` block says."""

    zones: tuple[str, ...]
    directory: str = ""
    pattern: re.Pattern[str] = re.compile(DEFAULT_PATTERN)
    template: str = DEFAULT_TEMPLATE
    reload: float = DEFAULT_RELOAD
    """Seconds between directory scans (and zone reloads); 0 = scan once."""

    def origin_for(self, base_name: str) -> str | None:
        """The origin a file's base name stands for, or None when the pattern does not match.

        As Go's ``FindStringSubmatch``: an unanchored search; ``{N}`` in the
        template is replaced by group N literally (an unmatched group by "").
        """
        match = self.pattern.search(base_name)
        if match is None:
            return None

        def group(ref: re.Match[str]) -> str:
            index = int(ref.group(1))
            if index > (self.pattern.groups or 0):
                return ""
            return match.group(index) or ""

        origin = _GROUP_REFERENCE.sub(group, self.template)
        if not origin:
            return None
        return (origin if origin.endswith(".") else origin + ".").lower()


def parse_auto(directives: Sequence[Directive], ctx: SetupContext) -> AutoConfig:
    """Read ``auto [ZONES...] { directory DIR [REGEXP TEMPLATE]; reload DURATION }``."""
    d = directives[0]
    zones = tuple(parse_zones(d.args, ctx, d))
    directory = ""
    pattern = re.compile(DEFAULT_PATTERN)
    template = DEFAULT_TEMPLATE
    reload = DEFAULT_RELOAD
    for option in d.block or ():
        if option.name == "directory":
            check_args(option, 1, 3)
            directory = option.args[0]
            _check_directory(directory, option)
            if len(option.args) == 2:
                check_args(option, 3)  # a REGEXP needs its TEMPLATE
            if len(option.args) == 3:
                pattern = _compile(option, 1)
                template = option.args[2]
        elif option.name == "reload":
            reload = parse_reload(option)
        elif option.name == "upstream":
            pass  # accepted and ignored, as CoreDNS does
        else:
            raise SetupError(f"unknown property '{option.name}'", option)
    return AutoConfig(zones, directory, pattern, template, reload)


def _check_directory(directory: str, option: Directive) -> None:
    """A missing directory only warns (it may appear later); one that cannot be read fails."""
    try:
        os.stat(directory)
    except FileNotFoundError:
        log.warning("plugin/auto: Directory does not exist: %s", directory)
    except OSError as exc:
        raise SetupError(
            f"Unable to access root path '{directory}': {exc.strerror or exc}", option, 0
        ) from None


def _compile(option: Directive, index: int) -> re.Pattern[str]:
    text = option.args[index]
    if len(text) > MAX_PATTERN_LEN:
        raise SetupError("regexp too large", option, index)
    try:
        pattern = compile_re2(text)
    except Re2Error as exc:
        raise SetupError(f"error parsing regexp: {exc}", option, index) from None
    if pattern.groups == 0:
        raise SetupError("Need at least one sub expression", option, index)
    return pattern
