"""The ``file`` directive: from Corefile lines to a frozen configuration (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pycorefile import Directive, Fallthrough, SetupContext, SetupError, check_args, parse_zones
from pycorefile.plugin import parse_duration

DEFAULT_RELOAD = 60.0


@dataclass(frozen=True)
class ZoneFile:
    """One ``file DBFILE [ZONES...]`` line: the file and the origins it is read for."""

    path: str
    origins: tuple[str, ...]
    reload: float = DEFAULT_RELOAD
    """Seconds between looks at the file; 0 never reloads."""
    reload_by_mtime: bool = False
    directive: Directive | None = None


@dataclass(frozen=True)
class FileConfig:
    """Every ``file`` line of one server block."""

    files: tuple[ZoneFile, ...]
    fallthrough: Fallthrough | None = None


def parse_reload(option: Directive) -> float:
    """``reload DURATION`` as CoreDNS's file and auto read it (0 = never)."""
    if not option.args:
        raise SetupError("reload duration value is expected", option)
    check_args(option, 1, 1)
    return parse_duration(option.args[0], option, 0)


def parse_file(directives: Sequence[Directive], ctx: SetupContext) -> FileConfig:
    """Read ``file DBFILE [ZONES...] { reload D; reload_by_mtime; fallthrough [ZONES...] }``.

    Several ``file`` lines may share a block. As in CoreDNS, a ``reload`` or
    ``reload_by_mtime`` carries over to the lines after it, and the last
    ``fallthrough`` applies to all of them.
    """
    files: list[ZoneFile] = []
    fallthrough: Fallthrough | None = None
    reload = DEFAULT_RELOAD
    by_mtime = False
    for d in directives:
        check_args(d, 1)
        origins = tuple(parse_zones(d.args[1:], ctx, d, 1))
        for option in d.block or ():
            if option.name == "reload":
                reload = parse_reload(option)
            elif option.name == "reload_by_mtime":
                check_args(option, 0, 0)
                by_mtime = True
            elif option.name == "fallthrough":
                fallthrough = Fallthrough.parse(option)
            elif option.name == "upstream":
                pass  # accepted and ignored, as CoreDNS does
            else:
                raise SetupError(f"unknown property '{option.name}'", option)
        files.append(ZoneFile(d.args[0], origins, reload, by_mtime, d))
    return FileConfig(tuple(files), fallthrough)
