"""A setup error's position, checked the way every plugin's table of refused Corefiles does."""

from __future__ import annotations

import re

import pytest

from pycorefile import CorefileError, load_config


def assert_refused_at(
    body: str, message: str, token: str, plugin: str, *, last: bool = False
) -> None:
    """``body`` (lines inside ``.:53 { }``) is refused with ``message``, at ``token``.

    The position expected is the first line after the zone's that holds
    ``token``, at its first occurrence there (its last with ``last``), as
    ``Corefile:LINE:COLUMN - plugin/PLUGIN: ``.
    """
    corefile = f".:53 {{\n    {body}\n}}\n"
    with pytest.raises(CorefileError, match=re.escape(message)) as info:
        load_config(corefile)
    source = corefile.splitlines()
    line = next(i for i, row in enumerate(source) if token in row and i >= 1)
    column = (source[line].rindex(token) if last else source[line].index(token)) + 1
    assert str(info.value).startswith(f"Corefile:{line + 1}:{column} - plugin/{plugin}: ")
